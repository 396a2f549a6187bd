// The orders of the Go example: read as the JavaScript example's JSON.parse reads them, so that
// every example accepts the same orders, and the customer written back as JSON.stringify
// writes it.
package main

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"unicode/utf8"
)

// JSON numbers are doubles in JavaScript: only integers a double holds exactly are valid, so
// that every example accepts the same orders.
const maxSafeInteger = 1<<53 - 1

type order struct {
	id       int64
	customer string
	cents    int64
}

// parseOrder returns the order in value, or why it is not a valid one. It accepts what the
// JavaScript example's JSON.parse accepts: duplicate keys (the last one wins), numbers of any
// size (as doubles), and escapes of lone surrogates, which only the customer must not have.
func parseOrder(value []byte) (order, error) {
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD.
	if !utf8.Valid(value) {
		return order{}, errors.New("not UTF-8")
	}
	// Raw members: numbers stay text (1e400 elsewhere in the order is no error, as in
	// JavaScript) and the customer's escapes can still be checked.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(value, &fields); err != nil {
		// Unmarshal checks the syntax of the whole input first: a type error means JSON that
		// is not an object.
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return order{}, errors.New("not a JSON object")
		}
		return order{}, err
	}
	if fields == nil { // `null`
		return order{}, errors.New("not a JSON object")
	}
	id, ok := integer(fields["id"])
	if !ok {
		return order{}, errors.New("field `id` must be an integer")
	}
	var customer string
	raw := fields["customer"]
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &customer) != nil || customer == "" {
		return order{}, errors.New("field `customer` must be a non-empty string")
	}
	if hasLoneSurrogate(raw) {
		return order{}, errors.New("field `customer` has a lone surrogate, which UTF-8 cannot encode")
	}
	cents, ok := integer(fields["cents"])
	if !ok || cents < 0 {
		return order{}, errors.New("field `cents` must be a non-negative integer")
	}
	return order{id, customer, cents}, nil
}

// integer reads a JSON number as JSON.parse does, as the nearest double (so 1.0 and 1e2 count,
// and 1e-400 is 0), and returns it if that is an integer a double holds exactly.
func integer(raw json.RawMessage) (int64, bool) {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false // not a number: missing, a string, a boolean...
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > maxSafeInteger {
		return 0, false // out of range (±Inf), or has a fraction
	}
	return int64(f), true // -0 becomes 0, as JSON.stringify writes it
}

// hasLoneSurrogate tells whether a JSON string has a \uXXXX escape of half a surrogate pair
// without the other half: encoding/json would make it U+FFFD, JSON.parse keeps it.
func hasLoneSurrogate(raw []byte) bool {
	unit := func(i int) rune { // the code unit of a \u escape at i, or -1
		if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
			return -1
		}
		n, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
		if err != nil {
			return -1
		}
		return rune(n)
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		u := unit(i)
		switch {
		case u < 0:
			i++ // another escape: skip what it escapes
		case u >= 0xD800 && u <= 0xDBFF:
			if low := unit(i + 6); low < 0xDC00 || low > 0xDFFF {
				return true
			}
			i += 11
		case u >= 0xDC00 && u <= 0xDFFF:
			return true
		default:
			i += 5
		}
	}
	return false
}

// appendJSONString appends s as a JSON string escaped as JSON.stringify escapes it (which
// json.Marshal does not: it also escapes <, >, &, U+2028 and U+2029).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, `\b`...)
		case '\f':
			b = append(b, `\f`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		default:
			if c < 0x20 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
			} else {
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}
