package sluice

// The consumer layer against a fake engine: a batch's writes reach it in one write-many and
// its records in one send-frame per topic, values are kept between batches while the
// generation stays the same, and a poison record leaves nothing behind.

import (
	"strconv"
	"testing"
)

type fake struct {
	store      map[string][]byte
	gets       int
	writeManys [][]byte
	frames     []pending
	generation uint64
}

func bindFake() *fake {
	f := &fake{store: map[string][]byte{}, generation: 1}
	host = engine{
		stateGet: func(key []byte) ([]byte, bool) {
			f.gets++
			v, ok := f.store[string(key)]
			return v, ok
		},
		stateWriteMany:  func(frame []byte) { f.writeManys = append(f.writeManys, frame) },
		stateGeneration: func() uint64 { return f.generation },
		stateScan:       func([]byte, []byte, uint32) [][2][]byte { return nil },
		emitSendFrame: func(topic string, count uint32, frame []byte) error {
			f.frames = append(f.frames, pending{frame: frame, count: count})
			return nil
		},
		logWrite: func(uint32, string, [][2]string) {},
	}
	state.started = false
	state.forget()
	emit.forget()
	return f
}

func counter() Consumer {
	return &RecordConsumer{OnRecord: func(r *Record) error {
		if r.Key == nil {
			return NewPoison(r, "no key")
		}
		stored, _ := state.Get(r.Key)
		n, _ := strconv.Atoi(string(stored))
		count := []byte(strconv.Itoa(n + 1))
		state.Set(r.Key, count)
		emit.Send("counts", r.Key, count)
		return nil
	}}
}

func batchOf(keys ...string) *Batch {
	var frame []byte
	for _, k := range keys {
		var key []byte
		if k != "-" {
			key = []byte(k)
		}
		frame = AppendRecord(frame, 1, key, []byte("v"), nil)
	}
	return &Batch{Topic: "in", BaseOffset: 10, Count: uint32(len(keys)), frame: frame}
}

func values(t *testing.T, p pending) []string {
	records := NewRecords(p.frame, 0, p.count)
	var out []string
	var r Record
	for records.Next(&r) {
		out = append(out, string(r.Value))
	}
	if records.Err() != nil {
		t.Fatal(records.Err())
	}
	return out
}

func TestOneWriteManyAndOneSendFramePerBatch(t *testing.T) {
	f := bindFake()
	Register(counter())
	if o := processBatch(batchOf("a", "b", "a")); o != nil {
		t.Fatalf("%+v", o)
	}
	if o := processBatch(batchOf("a")); o != nil {
		t.Fatalf("%+v", o)
	}
	if len(f.writeManys) != 2 || len(f.frames) != 2 {
		t.Fatalf("%d write-manys, %d frames", len(f.writeManys), len(f.frames))
	}
	if got := values(t, f.frames[0]); len(got) != 3 || got[2] != "2" {
		t.Fatalf("first batch emitted %v", got)
	}
	if got := values(t, f.frames[1]); got[0] != "3" {
		t.Fatalf("second batch emitted %v", got)
	}
	if f.gets != 2 {
		t.Fatalf("%d reads: a and b should be read once, then kept", f.gets)
	}
}

func TestPoisonLeavesNothingBehind(t *testing.T) {
	f := bindFake()
	Register(counter())
	o := processBatch(batchOf("a", "-"))
	if o == nil || o.poison == nil || o.poison.Offset != 11 {
		t.Fatalf("%+v", o)
	}
	if len(f.writeManys) != 0 || len(f.frames) != 0 {
		t.Fatal("a failed batch handed its effects to the engine")
	}
	processBatch(batchOf("a"))
	if got := values(t, f.frames[0]); got[0] != "1" {
		t.Fatalf("the failed batch's write was kept: %v", got)
	}
}

func TestANewGenerationDropsKeptValues(t *testing.T) {
	f := bindFake()
	Register(counter())
	processBatch(batchOf("a"))
	f.generation++
	processBatch(batchOf("a"))
	if f.gets != 2 {
		t.Fatalf("%d reads, want 2", f.gets)
	}
}
