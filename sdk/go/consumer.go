package sluice

// The consumer layer: what a consumer implements and what it calls (state, emit, log),
// independent of the canonical ABI (abi.go binds it to the engine inside a component; tests
// bind fakes), so it runs and is tested natively.

import (
	"errors"
	"fmt"
)

// Consumer is what a plugin implements. Register it from the main package's init function:
//
//	func init() { sluice.Register(&Counter{}) }
type Consumer interface {
	// Init is called once per instance with the key=value settings given at deploy; an
	// error refuses the deploy with its message.
	Init(config map[string]string) error
	// Process handles a batch; return a *Poison to send one record to the dead-letter topic,
	// any other error to fail the batch (the engine retries it, then looks for the record
	// that fails it). A failed batch leaves no state writes and no emitted records.
	Process(batch *Batch) error
}

// RecordConsumer is a Consumer written per record: embed it, and set OnRecord.
type RecordConsumer struct {
	OnRecord func(record *Record) error
}

// Init does nothing; define your own Init to read settings.
func (c *RecordConsumer) Init(map[string]string) error { return nil }

// Process calls OnRecord for each record of the batch.
func (c *RecordConsumer) Process(batch *Batch) error {
	records := batch.Records()
	var record Record
	for records.Next(&record) {
		if err := c.OnRecord(&record); err != nil {
			return err
		}
	}
	return records.Err()
}

// Batch is consecutive records of one partition.
type Batch struct {
	Topic      string
	Partition  uint32
	BaseOffset uint64
	Count      uint32
	frame      []byte
}

// Records decodes the batch's records one at a time.
func (b *Batch) Records() *Records { return NewRecords(b.frame, b.BaseOffset, b.Count) }

// Poison says a record can never be processed: it goes to the dead-letter topic with Reason.
type Poison struct {
	Offset uint64
	Reason string
}

func (p *Poison) Error() string {
	return fmt.Sprintf("record at offset %d is poison: %s", p.Offset, p.Reason)
}

// NewPoison is the error that sends `record` to the dead-letter topic.
func NewPoison(record *Record, reason string) error {
	return &Poison{Offset: record.Offset, Reason: reason}
}

// engine is what the layer needs of the engine: the imports of the world.
type engine struct {
	stateGet        func(key []byte) ([]byte, bool)
	stateWriteMany  func(frame []byte)
	stateGeneration func() uint64
	stateScan       func(prefix, startAfter []byte, limit uint32) [][2][]byte
	emitSendFrame   func(topic string, count uint32, frame []byte) error
	logWrite        func(level uint32, message string, fields [][2]string)
}

var host engine

// KeptEntriesMax is how many values the plugin keeps between batches at most.
const KeptEntriesMax = 100_000

type kept struct {
	value   []byte
	present bool
}

// StateStore is the group's keyed state: values read and written are kept between batches
// while the engine's generation stays the same, and a batch's writes reach the engine in one
// write-many call at its end.
type StateStore struct {
	kept       map[string]kept
	written    map[string][]byte // nil value: delete
	order      []string
	generation uint64
	started    bool
}

// State is the group's state: sluice.State.Get(key), .Set(key, value), .Delete(key),
// .Scan(prefix, startAfter, limit).
var State = &StateStore{kept: map[string]kept{}, written: map[string][]byte{}}

var state = State

// Get is the value of key, and whether it has one.
func (s *StateStore) Get(key []byte) ([]byte, bool) {
	if k, ok := s.kept[string(key)]; ok {
		return k.value, k.present
	}
	value, present := host.stateGet(key)
	s.kept[string(key)] = kept{value, present}
	return value, present
}

// Set sets key to value.
func (s *StateStore) Set(key, value []byte) {
	if value == nil {
		value = []byte{}
	}
	s.note(string(key), value)
	s.kept[string(key)] = kept{value, true}
}

// Delete deletes key.
func (s *StateStore) Delete(key []byte) {
	s.note(string(key), nil)
	s.kept[string(key)] = kept{nil, false}
}

// Scan returns up to limit (at most 1000) entries whose key starts with prefix, in key order,
// after startAfter (nil: from the start).
func (s *StateStore) Scan(prefix, startAfter []byte, limit uint32) [][2][]byte {
	s.flush() // the engine merges its committed state with the writes handed to it
	return host.stateScan(prefix, startAfter, limit)
}

func (s *StateStore) note(key string, value []byte) {
	if _, ok := s.written[key]; !ok {
		s.order = append(s.order, key)
	}
	s.written[key] = value
}

func (s *StateStore) begin() {
	generation := host.stateGeneration()
	if !s.started || generation != s.generation || len(s.kept) > KeptEntriesMax {
		clear(s.kept)
		s.generation, s.started = generation, true
	}
}

func (s *StateStore) flush() {
	if len(s.order) == 0 {
		return
	}
	var frame []byte
	for _, key := range s.order {
		frame = AppendWrite(frame, []byte(key), s.written[key])
	}
	clear(s.written)
	s.order = s.order[:0]
	host.stateWriteMany(frame)
}

func (s *StateStore) forget() {
	clear(s.kept)
	clear(s.written)
	s.order = s.order[:0]
}

// Output buffers a batch's records per topic; each topic's go in one send-frame at the end.
type Output struct {
	frames map[string]*pending
	order  []string
}

type pending struct {
	frame []byte
	count uint32
}

// Emit is the plugin's output: sluice.Emit.Send(topic, key, value, headers...).
var Emit = &Output{frames: map[string]*pending{}}

var emit = Emit

// Send emits a record to topic (one of the group's output topics); a nil key is no key. It
// becomes visible when the batch commits.
func (e *Output) Send(topic string, key, value []byte, headers ...Header) {
	p, ok := e.frames[topic]
	if !ok {
		p = &pending{}
		e.frames[topic] = p
		e.order = append(e.order, topic)
	}
	p.frame = AppendRecord(p.frame, 0, key, value, headers)
	p.count++
}

func (e *Output) flush() error {
	defer e.forget()
	for _, topic := range e.order {
		p := e.frames[topic]
		if err := host.emitSendFrame(topic, p.count, p.frame); err != nil {
			return err
		}
	}
	return nil
}

func (e *Output) forget() {
	clear(e.frames)
	e.order = e.order[:0]
}

// Log levels of the `level` enum.
const (
	LevelTrace uint32 = iota
	LevelDebug
	LevelInfo
	LevelWarn
	LevelError
)

// Log writes a log line with name/value field pairs; it reaches the engine's log with the
// group and plugin version.
func Log(level uint32, message string, fields ...string) {
	var pairs [][2]string
	for i := 0; i+1 < len(fields); i += 2 {
		pairs = append(pairs, [2]string{fields[i], fields[i+1]})
	}
	host.logWrite(level, message, pairs)
}

var registered Consumer

// Register makes consumer the plugin's: call it from the main package's init function.
func Register(consumer Consumer) { registered = consumer }

// initialize runs the consumer's Init; the error's text, or "".
func initialize(settings [][2]string) string {
	if registered == nil {
		return "no consumer registered: call sluice.Register from your package's init function"
	}
	config := make(map[string]string, len(settings))
	for _, s := range settings { // the last of a name wins
		config[s[0]] = s[1]
	}
	if err := registered.Init(config); err != nil {
		return err.Error()
	}
	return ""
}

// outcome is how a batch ended: nil, a poison record, or a failure.
type outcome struct {
	poison *Poison
	failed string
}

func processBatch(batch *Batch) *outcome {
	state.begin()
	err := registered.Process(batch)
	if err == nil {
		state.flush()
		err = emit.flush()
	}
	if err == nil {
		return nil
	}
	state.forget()
	emit.forget()
	var poison *Poison
	if errors.As(err, &poison) {
		return &outcome{poison: poison}
	}
	return &outcome{failed: err.Error()}
}
