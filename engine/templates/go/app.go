// {{name}}: counts records per key.
//
// The count lives in the group's state (key = the record's key, value = the count as decimal
// text) and each record emits its key's new count to the `output` topic. A record without a
// key is rejected as poison: it goes to the dead-letter topic and processing continues. Build
// with `sluice plugin build .`, which puts the Go SDK (sluice.dev/sdk) under target/.
package main

import (
	"strconv"

	sluice "sluice.dev/sdk"
)

type counter struct {
	output string
}

func (c *counter) Init(config map[string]string) error {
	c.output = "counts"
	if output, ok := config["output"]; ok {
		c.output = output
	}
	sluice.Log(sluice.LevelInfo, "{{name}} ready", "output", c.output)
	return nil
}

func (c *counter) Process(batch *sluice.Batch) error {
	records := batch.Records()
	var record sluice.Record
	for records.Next(&record) {
		if record.Key == nil {
			return sluice.NewPoison(&record, "record has no key")
		}
		stored, _ := sluice.State.Get(record.Key)
		n, _ := strconv.Atoi(string(stored))
		count := []byte(strconv.Itoa(n + 1))
		sluice.State.Set(record.Key, count)
		sluice.Emit.Send(c.output, record.Key, count)
	}
	return records.Err()
}

func init() { sluice.Register(&counter{}) }

// A reactor has no main; -buildmode=c-shared never calls it, but package main needs one.
func main() {}
