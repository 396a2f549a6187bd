//go:build wasip1

package sluice

// The canonical ABI of the `consumer` world (wit/plugin.wit), written by hand so that a Go
// consumer needs nothing but the standard library: //go:wasmimport for the engine's
// functions, //go:wasmexport for the world's exports, with the flattened signatures and return
// areas that `wit-bindgen c` generates for the same world. A consumer is built as a reactor
// (-buildmode=c-shared): the component calls _initialize once, which starts the Go runtime
// and runs package initialisation (where the consumer registers), then the exports.

import (
	"encoding/binary"
	"errors"
	"runtime"
	"unsafe"
)

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

// address is where b starts in linear memory (pointers are 32 bits in wasm memory).
func address(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

func stringAddress(s string) uint32 {
	return uint32(uintptr(unsafe.Pointer(unsafe.StringData(s))))
}

func u32(b []byte, i int) uint32 { return binary.LittleEndian.Uint32(b[i:]) }

func pointer(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

// The return area of the imports, filled in by the engine: a tag (0 or 1) at 0, then a list's
// or string's address and length at 4 and 8.
var importResult [3]uint32

//go:wasmimport sluice:plugin/state@0.1.0 get
func rawStateGet(key unsafe.Pointer, keyLen uint32, result *[3]uint32)

//go:wasmimport sluice:plugin/state@0.1.0 write-many
func rawStateWriteMany(writes unsafe.Pointer, writesLen uint32)

//go:wasmimport sluice:plugin/state@0.1.0 generation
func rawStateGeneration() uint64

//go:wasmimport sluice:plugin/state@0.1.0 scan
func rawStateScan(prefix unsafe.Pointer, prefixLen uint32, hasStart uint32,
	start unsafe.Pointer, startLen uint32, limit uint32, result *[2]uint32)

//go:wasmimport sluice:plugin/emit@0.1.0 send-frame
func rawEmitSendFrame(topic string, count uint32, records unsafe.Pointer, recordsLen uint32,
	result *[3]uint32)

//go:wasmimport sluice:plugin/log@0.1.0 write
func rawLogWrite(level uint32, message string, fields unsafe.Pointer, fieldCount uint32)

var scanResult [2]uint32

func init() {
	host = engine{
		stateGet: func(key []byte) ([]byte, bool) {
			rawStateGet(pointer(key), uint32(len(key)), &importResult)
			if importResult[0] == 0 {
				return nil, false
			}
			value := take(importResult[1], importResult[2])
			if value == nil {
				value = []byte{}
			}
			return value, true
		},
		stateWriteMany: func(frame []byte) {
			rawStateWriteMany(pointer(frame), uint32(len(frame)))
			runtime.KeepAlive(frame)
		},
		stateGeneration: rawStateGeneration,
		stateScan: func(prefix, startAfter []byte, limit uint32) [][2][]byte {
			hasStart := uint32(0)
			if startAfter != nil {
				hasStart = 1
			}
			rawStateScan(pointer(prefix), uint32(len(prefix)), hasStart, pointer(startAfter),
				uint32(len(startAfter)), limit, &scanResult)
			// Each entry: key address and length, value address and length.
			list := take(scanResult[0], scanResult[1]*16)
			entries := make([][2][]byte, scanResult[1])
			for i := range entries {
				e := list[i*16:]
				entries[i] = [2][]byte{take(u32(e, 0), u32(e, 4)), take(u32(e, 8), u32(e, 12))}
			}
			return entries
		},
		emitSendFrame: func(topic string, count uint32, frame []byte) error {
			rawEmitSendFrame(topic, count, pointer(frame), uint32(len(frame)), &importResult)
			runtime.KeepAlive(frame)
			if importResult[0] == 0 {
				return nil
			}
			return errors.New(string(take(importResult[1], importResult[2])))
		},
		logWrite: func(level uint32, message string, fields [][2]string) {
			// A list<tuple<string, string>>: per field, name address and length, value
			// address and length.
			flat := make([]uint32, 0, 4*len(fields))
			for _, f := range fields {
				flat = append(flat, stringAddress(f[0]), uint32(len(f[0])), stringAddress(f[1]), uint32(len(f[1])))
			}
			var list unsafe.Pointer
			if len(flat) > 0 {
				list = unsafe.Pointer(&flat[0])
			}
			rawLogWrite(level, message, list, uint32(len(fields)))
			runtime.KeepAlive(flat)
			runtime.KeepAlive(fields)
		},
	}
}

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
	failure := initialize(settings)
	result := resultBytes()
	clear(result)
	if failure != "" {
		result[0] = 1
		putString(result, 4, failure)
	}
	return address(result)
}

//go:wasmexport process
func exportProcess(topic, topicLen, partition uint32, baseOffset uint64, count uint32,
	records, recordsLen uint32) uint32 {
	batch := &Batch{
		Topic:      string(take(topic, topicLen)),
		Partition:  partition,
		BaseOffset: baseOffset,
		Count:      count,
		frame:      take(records, recordsLen),
	}
	outcome := processBatch(batch)
	clear(allocations) // whatever the engine allocated and the code did not take
	result := resultBytes()
	clear(result)
	switch {
	case outcome == nil:
	case outcome.poison != nil:
		result[0], result[8] = 1, 1
		binary.LittleEndian.PutUint64(result[16:], outcome.poison.Offset)
		putString(result, 24, outcome.poison.Reason)
	default:
		result[0], result[8] = 1, 0
		putString(result, 16, outcome.failed)
	}
	return address(result)
}
