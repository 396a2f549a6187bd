// Package sluice holds what a Sluice consumer written in Go needs. This file: the bytes
// between a plugin and the engine (wit/plugin.wit), records frames (a batch's `records`, and
// what `emit.send-frame` takes) and `state.write-many` frames.
//
// A records frame holds, per record: a varint of zigzag(timestamp in ms), a varint of
// zigzag(key length, -1 for no key), the key, a varint value length, the value, a varint
// header count, then per header a varint name length, the UTF-8 name, a varint value length
// and the value. Varints are LEB128, at most 10 bytes. A write-many frame holds, per write, a
// varint key length and the key, then 0 to delete it or the value length plus one and the
// value.
//
// Version 0.1.0: the WIT package it implements, sluice:plugin@0.1.0.
package sluice

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Version is the version of the WIT package this SDK implements.
const Version = "0.1.0"

// VarintBytesMax is how many bytes a LEB128 varint of a 64-bit value takes at most.
const VarintBytesMax = 10

// Header is one header of a record: a UTF-8 name and opaque bytes.
type Header struct {
	Name  string
	Value []byte
}

// Record is one record of a batch. Key is nil when the record has none (an empty key is a
// non-nil empty slice). Key, Value and header values share the frame's memory.
type Record struct {
	Offset    uint64
	Timestamp int64
	Key       []byte
	Value     []byte
	Headers   []Header
}

// FrameError is a frame that does not hold what it announced: never read as records.
type FrameError struct {
	Offset uint64
	Reason string
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("malformed records frame at offset %d: %s", e.Offset, e.Reason)
}

// Records decodes the records of a frame one at a time.
type Records struct {
	data      []byte
	pos       int
	next      uint64
	remaining uint32
	err       error
}

// NewRecords reads the `count` records of `frame`, the first at `baseOffset`.
func NewRecords(frame []byte, baseOffset uint64, count uint32) *Records {
	return &Records{data: frame, next: baseOffset, remaining: count}
}

// Next decodes the next record into `record`; false at the end or at the first malformed
// record (then Err says why).
func (r *Records) Next(record *Record) bool {
	if r.remaining == 0 || r.err != nil {
		return false
	}
	if err := r.decode(record); err != nil {
		r.err = err
		return false
	}
	r.remaining--
	r.next++
	return true
}

// Err is why Next stopped early, or nil.
func (r *Records) Err() error { return r.err }

func (r *Records) fail(reason string) error {
	return &FrameError{Offset: r.next, Reason: reason}
}

func (r *Records) varint() (uint64, error) {
	value, n := binary.Uvarint(r.data[r.pos:])
	switch {
	case n == 0:
		return 0, r.fail("the frame ends inside the record")
	case n < 0 || n > VarintBytesMax:
		return 0, r.fail("a varint longer than 10 bytes")
	}
	r.pos += n
	return value, nil
}

func (r *Records) take(length uint64, what string) ([]byte, error) {
	if length > uint64(len(r.data)-r.pos) {
		return nil, r.fail(what + " runs past the end")
	}
	field := r.data[r.pos : r.pos+int(length) : r.pos+int(length)]
	r.pos += int(length)
	return field, nil
}

func signed(value uint64) int64 { return int64(value>>1) ^ -int64(value&1) }

func (r *Records) decode(record *Record) error {
	timestamp, err := r.varint()
	if err != nil {
		return err
	}
	keyLength, err := r.varint()
	if err != nil {
		return err
	}
	var key []byte
	switch length := signed(keyLength); {
	case length == -1:
	case length < 0:
		return r.fail(fmt.Sprintf("key length %d", length))
	default:
		if key, err = r.take(uint64(length), "the key"); err != nil {
			return err
		}
	}
	valueLength, err := r.varint()
	if err != nil {
		return err
	}
	value, err := r.take(valueLength, "the value")
	if err != nil {
		return err
	}
	count, err := r.varint()
	if err != nil {
		return err
	}
	var headers []Header
	for i := uint64(0); i < count; i++ {
		nameLength, err := r.varint()
		if err != nil {
			return err
		}
		name, err := r.take(nameLength, "a header name")
		if err != nil {
			return err
		}
		if !utf8.Valid(name) {
			return r.fail("a header name is not UTF-8")
		}
		length, err := r.varint()
		if err != nil {
			return err
		}
		headerValue, err := r.take(length, "a header value")
		if err != nil {
			return err
		}
		headers = append(headers, Header{Name: string(name), Value: headerValue})
	}
	*record = Record{Offset: r.next, Timestamp: signed(timestamp), Key: key, Value: value, Headers: headers}
	return nil
}

func zigzag(value int64) uint64 { return uint64(value<<1) ^ uint64(value>>63) }

// AppendRecord appends one record to a records frame (emitted records take timestamp 0: the
// engine stamps them). A nil key is no key.
func AppendRecord(out []byte, timestamp int64, key, value []byte, headers []Header) []byte {
	out = binary.AppendUvarint(out, zigzag(timestamp))
	if key == nil {
		out = append(out, 1) // zigzag(-1)
	} else {
		out = binary.AppendUvarint(out, zigzag(int64(len(key))))
		out = append(out, key...)
	}
	out = binary.AppendUvarint(out, uint64(len(value)))
	out = append(out, value...)
	out = binary.AppendUvarint(out, uint64(len(headers)))
	for _, header := range headers {
		out = binary.AppendUvarint(out, uint64(len(header.Name)))
		out = append(out, header.Name...)
		out = binary.AppendUvarint(out, uint64(len(header.Value)))
		out = append(out, header.Value...)
	}
	return out
}

// AppendWrite appends one write to a `state.write-many` frame; a nil value deletes the key.
func AppendWrite(out []byte, key, value []byte) []byte {
	out = binary.AppendUvarint(out, uint64(len(key)))
	out = append(out, key...)
	if value == nil {
		return append(out, 0)
	}
	out = binary.AppendUvarint(out, uint64(len(value))+1)
	return append(out, value...)
}
