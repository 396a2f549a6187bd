package sluice

// The Go SDK's codecs against the shared test vectors (sdk/testdata/, written from the
// engine's codecs): valid frames decode to exactly their records and encode back byte for
// byte, every malformed frame is an error, and write-many frames encode byte for byte.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"testing"
)

type vectorRecord struct {
	Offset    string      `json:"offset"`
	Timestamp string      `json:"timestamp"`
	Key       *string     `json:"key"`
	Value     string      `json:"value"`
	Headers   [][2]string `json:"headers"`
}

type recordsVectors struct {
	Valid []struct {
		Name       string         `json:"name"`
		BaseOffset string         `json:"base_offset"`
		Count      uint32         `json:"count"`
		Frame      string         `json:"frame"`
		Records    []vectorRecord `json:"records"`
	} `json:"valid"`
	Malformed []struct {
		Name       string `json:"name"`
		BaseOffset string `json:"base_offset"`
		Count      uint32 `json:"count"`
		Frame      string `json:"frame"`
	} `json:"malformed"`
}

type writeVectors struct {
	Valid []struct {
		Name   string `json:"name"`
		Frame  string `json:"frame"`
		Writes []struct {
			Key   string  `json:"key"`
			Value *string `json:"value"`
		} `json:"writes"`
	} `json:"valid"`
}

func load(t *testing.T, name string, into any) {
	t.Helper()
	text, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(text, into); err != nil {
		t.Fatal(err)
	}
}

func unhex(t *testing.T, text string) []byte {
	t.Helper()
	b, err := hex.DecodeString(text)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRecordsFramesDecodeAndEncodeByteForByte(t *testing.T) {
	var vectors recordsVectors
	load(t, "records-frames.json", &vectors)
	for _, v := range vectors.Valid {
		frame := unhex(t, v.Frame)
		base, _ := strconv.ParseUint(v.BaseOffset, 10, 64)
		records := NewRecords(frame, base, v.Count)
		var encoded []byte
		var record Record
		n := 0
		for records.Next(&record) {
			want := v.Records[n]
			n++
			offset, _ := strconv.ParseUint(want.Offset, 10, 64)
			timestamp, _ := strconv.ParseInt(want.Timestamp, 10, 64)
			if record.Offset != offset || record.Timestamp != timestamp {
				t.Fatalf("%s: offset %d timestamp %d, want %d %d", v.Name, record.Offset, record.Timestamp, offset, timestamp)
			}
			if (want.Key == nil) != (record.Key == nil) || (want.Key != nil && !bytes.Equal(record.Key, unhex(t, *want.Key))) {
				t.Fatalf("%s: key %x, want %v", v.Name, record.Key, want.Key)
			}
			if !bytes.Equal(record.Value, unhex(t, want.Value)) {
				t.Fatalf("%s: value differs", v.Name)
			}
			if len(record.Headers) != len(want.Headers) {
				t.Fatalf("%s: %d headers, want %d", v.Name, len(record.Headers), len(want.Headers))
			}
			for i, h := range want.Headers {
				if record.Headers[i].Name != h[0] || !bytes.Equal(record.Headers[i].Value, unhex(t, h[1])) {
					t.Fatalf("%s: header %d differs", v.Name, i)
				}
			}
			encoded = AppendRecord(encoded, record.Timestamp, record.Key, record.Value, record.Headers)
		}
		if err := records.Err(); err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		if n != len(v.Records) {
			t.Fatalf("%s: %d records, want %d", v.Name, n, len(v.Records))
		}
		if !bytes.Equal(encoded, frame) {
			t.Fatalf("%s: encoded differently", v.Name)
		}
	}
}

func TestMalformedRecordsFramesAreErrors(t *testing.T) {
	var vectors recordsVectors
	load(t, "records-frames.json", &vectors)
	for _, v := range vectors.Malformed {
		records := NewRecords(unhex(t, v.Frame), 0, v.Count)
		var record Record
		for records.Next(&record) {
		}
		if records.Err() == nil {
			t.Fatalf("%s: read without an error", v.Name)
		}
	}
}

func TestWriteManyFramesEncodeByteForByte(t *testing.T) {
	var vectors writeVectors
	load(t, "write-many.json", &vectors)
	for _, v := range vectors.Valid {
		var encoded []byte
		for _, w := range v.Writes {
			var value []byte
			if w.Value != nil {
				value = unhex(t, *w.Value)
				if value == nil {
					value = []byte{}
				}
			}
			encoded = AppendWrite(encoded, unhex(t, w.Key), value)
		}
		if !bytes.Equal(encoded, unhex(t, v.Frame)) {
			t.Fatalf("%s: encoded differently", v.Name)
		}
	}
}
