// Order totals: a Sluice consumer in Go (standard library only, GOOS=wasip1).
//
// Keeps a running total of cents per customer in the group's state and emits each order with
// that total. See ../README.md for the job every example does.
//
// It needs nothing but the standard library: Go's binding generators for WIT need third-party
// modules, so the canonical ABI of the `consumer` world (../../wit/plugin.wit) is written by
// hand below: //go:wasmimport for the engine's functions, //go:wasmexport for ours, with the
// flattened signatures and return areas that `wit-bindgen c` generates for the same world.
// It is built as a reactor (-buildmode=c-shared): the component calls _initialize once, which
// starts the Go runtime and runs package initialisation, and then the exports.
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"runtime"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// JSON numbers are doubles in JavaScript: only integers a double holds exactly are valid, so
// that every example accepts the same orders.
const maxSafeInteger = 1<<53 - 1

// ---------------------------------------------------------------------------------------
// The job

var output = "enriched" // the topic to emit to

func initialize(config [][2]string) {
	for _, setting := range config { // the last `output` wins
		if setting[0] == "output" {
			output = setting[1]
		}
	}
	logWrite(levelInfo, "go order totals ready", "output", output)
}

// processError is the error case of `process`: `poison` at offset, or else `failed`.
type processError struct {
	poison bool
	offset uint64
	reason string
}

func process(baseOffset uint64, count uint32, frame []byte) *processError {
	records := recordsFrame{data: frame}
	for n := range uint64(count) {
		value, err := records.next()
		if err != nil {
			return &processError{reason: "go: " + err.Error()}
		}
		order, err := parseOrder(value)
		if err != nil {
			return &processError{
				poison: true,
				offset: baseOffset + n,
				reason: "go: invalid order: " + err.Error(),
			}
		}
		key := []byte(order.customer)
		// The running total has no bound (as the JavaScript example's BigInt).
		total := new(big.Int)
		if stored, ok := stateGet(key); ok && len(stored) > 0 {
			if strings.Trim(string(stored), "0123456789") != "" {
				return &processError{reason: "go: the stored total is not a decimal number"}
			}
			total.SetString(string(stored), 10)
		}
		total.Add(total, big.NewInt(order.cents))
		stateSet(key, []byte(total.String()))

		body := make([]byte, 0, 64+len(key))
		body = append(body, `{"id":`...)
		body = strconv.AppendInt(body, order.id, 10)
		body = append(body, `,"customer":`...)
		body = appendJSONString(body, order.customer)
		body = append(body, `,"cents":`...)
		body = strconv.AppendInt(body, order.cents, 10)
		body = append(body, `,"total_cents":`...)
		body = total.Append(body, 10)
		body = append(body, '}')
		if err := emitSend(output, key, body); err != nil {
			return &processError{reason: err.Error()}
		}
	}
	return nil
}

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

// recordsFrame reads the values of a batch's records frame (wit/plugin.wit, `record batch`).
type recordsFrame struct {
	data []byte
}

var errTruncated = errors.New("the batch's records frame is truncated")

func (f *recordsFrame) varint() (uint64, error) {
	n, size := binary.Uvarint(f.data)
	if size <= 0 {
		return 0, errTruncated
	}
	f.data = f.data[size:]
	return n, nil
}

func (f *recordsFrame) take(n uint64) ([]byte, error) {
	if n > uint64(len(f.data)) {
		return nil, errTruncated
	}
	taken := f.data[:n]
	f.data = f.data[n:]
	return taken, nil
}

// next returns the next record's value.
func (f *recordsFrame) next() ([]byte, error) {
	if _, err := f.varint(); err != nil { // zigzag(timestamp)
		return nil, err
	}
	keyLen, err := f.varint() // zigzag(key length), -1 (1) for no key
	if err != nil {
		return nil, err
	}
	if keyLen := int64(keyLen>>1) ^ -int64(keyLen&1); keyLen > 0 {
		if _, err := f.take(uint64(keyLen)); err != nil {
			return nil, err
		}
	}
	valueLen, err := f.varint()
	if err != nil {
		return nil, err
	}
	value, err := f.take(valueLen)
	if err != nil {
		return nil, err
	}
	headers, err := f.varint()
	if err != nil {
		return nil, err
	}
	for range headers * 2 { // each a name and a value
		n, err := f.varint()
		if err != nil {
			return nil, err
		}
		if _, err := f.take(n); err != nil {
			return nil, err
		}
	}
	return value, nil
}

// ---------------------------------------------------------------------------------------
// The canonical ABI: memory the engine allocates in ours

// Allocations that the engine made through cabi_realloc and has not handed over yet, by
// address. The engine writes an export's arguments (and an import's results) into them after
// cabi_realloc returns, so until the code takes them over nothing else refers to them: this
// map keeps the garbage collector (which never moves objects) from freeing them.
var allocations = map[uint32][]byte{}

//go:wasmexport cabi_realloc
func cabiRealloc(old, oldSize, align, newSize uint32) uint32 {
	if newSize == 0 {
		return align // any aligned address will do for nothing
	}
	// Words: 8-aligned, which is as aligned as anything in the canonical ABI.
	words := make([]uint64, (newSize+7)/8)
	b := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), newSize)
	if prev, ok := allocations[old]; ok {
		copy(b, prev)
		delete(allocations, old)
	}
	addr := address(b)
	allocations[addr] = b
	return addr
}

// take hands over the n bytes at addr that cabi_realloc allocated.
func take(addr, n uint32) []byte {
	if n == 0 {
		return nil
	}
	b, ok := allocations[addr]
	if !ok || uint32(len(b)) < n {
		panic("sluice: not an allocation of cabi_realloc")
	}
	delete(allocations, addr)
	return b[:n]
}

// address is where b starts in linear memory (pointers are 32 bits in wasm memory; Go's are
// 64 bits only in name).
func address(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

func stringAddress(s string) uint32 {
	return uint32(uintptr(unsafe.Pointer(unsafe.StringData(s))))
}

// u32 reads the little-endian word at offset i of b.
func u32(b []byte, i int) uint32 { return binary.LittleEndian.Uint32(b[i:]) }

// ---------------------------------------------------------------------------------------
// Imports

// Return areas of the imports, filled in by the engine: a tag (0 or 1) at 0, then a list's
// or string's address and length at 4 and 8.
var importResult [3]uint32

//go:wasmimport sluice:plugin/state@0.1.0 get
func rawStateGet(key unsafe.Pointer, keyLen uint32, result *[3]uint32)

//go:wasmimport sluice:plugin/state@0.1.0 set
func rawStateSet(key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32)

//go:wasmimport sluice:plugin/emit@0.1.0 send
func rawEmitSend(topic string, hasKey uint32, key unsafe.Pointer, keyLen uint32,
	value unsafe.Pointer, valueLen uint32, headers unsafe.Pointer, headerCount uint32,
	result *[3]uint32)

//go:wasmimport sluice:plugin/log@0.1.0 write
func rawLogWrite(level uint32, message string, fields unsafe.Pointer, fieldCount uint32)

func stateGet(key []byte) ([]byte, bool) {
	rawStateGet(unsafe.Pointer(unsafe.SliceData(key)), uint32(len(key)), &importResult)
	if importResult[0] == 0 {
		return nil, false
	}
	return take(importResult[1], importResult[2]), true
}

func stateSet(key, value []byte) {
	rawStateSet(unsafe.Pointer(unsafe.SliceData(key)), uint32(len(key)),
		unsafe.Pointer(unsafe.SliceData(value)), uint32(len(value)))
}

// emitSend sends a record without headers to topic.
func emitSend(topic string, key, value []byte) error {
	rawEmitSend(topic, 1, unsafe.Pointer(unsafe.SliceData(key)), uint32(len(key)),
		unsafe.Pointer(unsafe.SliceData(value)), uint32(len(value)), nil, 0, &importResult)
	if importResult[0] == 0 {
		return nil
	}
	return errors.New(string(take(importResult[1], importResult[2])))
}

const levelInfo = 2 // the `level` enum: trace, debug, info, warn, error

// logWrite writes a log line with one field.
func logWrite(level uint32, message, name, value string) {
	// A list<tuple<string, string>> of one: name address and length, value address and length.
	field := [4]uint32{stringAddress(name), uint32(len(name)), stringAddress(value), uint32(len(value))}
	rawLogWrite(level, message, unsafe.Pointer(&field), 1)
	runtime.KeepAlive(name) // the engine reads them through the addresses above
	runtime.KeepAlive(value)
}

// ---------------------------------------------------------------------------------------
// Exports

// The return area of the exports, read by the engine after they return: a result's tag at 0;
// for `init`'s error, a string at 4; for `process`'s, the variant's tag at 8 and then at 16
// either `failed`'s string or `poison`'s offset (u64) and its reason's string at 24.
var exportResult [4]uint64

// The string that the last export returned in exportResult, kept alive for the engine.
var returned string

func resultBytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&exportResult)), unsafe.Sizeof(exportResult))
}

func putString(b []byte, i int, s string) {
	returned = s
	binary.LittleEndian.PutUint32(b[i:], stringAddress(s))
	binary.LittleEndian.PutUint32(b[i+4:], uint32(len(s)))
}

//go:wasmexport init
func exportInit(config, count uint32) uint32 {
	// Each setting is 16 bytes: key address and length, value address and length.
	list := take(config, count*16)
	settings := make([][2]string, count)
	for i := range settings {
		e := list[i*16:]
		settings[i][0] = string(take(u32(e, 0), u32(e, 4)))
		settings[i][1] = string(take(u32(e, 8), u32(e, 12)))
	}
	initialize(settings)
	result := resultBytes()
	result[0] = 0 // ok: init cannot fail
	return address(result)
}

//go:wasmexport process
func exportProcess(topic, topicLen, partition uint32, baseOffset uint64, count uint32,
	records, recordsLen uint32) uint32 {
	take(topic, topicLen) // unused
	frame := take(records, recordsLen)
	err := process(baseOffset, count, frame)
	clear(allocations) // whatever the engine allocated and the code did not take
	result := resultBytes()
	clear(result)
	switch {
	case err == nil:
		result[0] = 0
	case err.poison:
		result[0], result[8] = 1, 1
		binary.LittleEndian.PutUint64(result[16:], err.offset)
		putString(result, 24, err.reason)
	default:
		result[0], result[8] = 1, 0
		putString(result, 16, err.reason)
	}
	return address(result)
}

// A reactor has no main; -buildmode=c-shared never calls it, but package main needs one.
func main() {}
