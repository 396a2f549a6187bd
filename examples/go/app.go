// Order totals: a Sluice consumer in Go, with the Go SDK (sdk/go, standard library only).
//
// Keeps a running total of cents per customer in the group's state and emits each order with
// that total. See ../README.md for the job every example does; order.go reads the orders' JSON
// as JavaScript's JSON.parse does. Built as a reactor
// (-buildmode=c-shared) by `sluice plugin build`, which puts the SDK under target/.
package main

import (
	"errors"
	"math/big"
	"strconv"
	"strings"

	sluice "sluice.dev/sdk"
)

type orderTotals struct {
	output string // the topic to emit to
}

func (t *orderTotals) Init(config map[string]string) error {
	t.output = "enriched"
	if output, ok := config["output"]; ok {
		t.output = output
	}
	sluice.Log(sluice.LevelInfo, "go order totals ready", "output", t.output)
	return nil
}

func (t *orderTotals) Process(batch *sluice.Batch) error {
	records := batch.Records()
	var record sluice.Record
	for records.Next(&record) {
		order, err := parseOrder(record.Value)
		if err != nil {
			return sluice.NewPoison(&record, "go: invalid order: "+err.Error())
		}
		key := []byte(order.customer)
		total := new(big.Int) // no bound, as the JavaScript example's BigInt
		if stored, ok := sluice.State.Get(key); ok && len(stored) > 0 {
			if strings.Trim(string(stored), "0123456789") != "" {
				return errors.New("go: the stored total is not a decimal number")
			}
			total.SetString(string(stored), 10)
		}
		total.Add(total, big.NewInt(order.cents))
		sluice.State.Set(key, []byte(total.String()))
		body := append([]byte(`{"id":`), strconv.FormatInt(order.id, 10)...)
		body = appendJSONString(append(body, `,"customer":`...), order.customer)
		body = strconv.AppendInt(append(body, `,"cents":`...), order.cents, 10)
		body = append(total.Append(append(body, `,"total_cents":`...), 10), '}')
		sluice.Emit.Send(t.output, key, body)
	}
	return records.Err()
}

func init() { sluice.Register(&orderTotals{}) }

// A reactor has no main; -buildmode=c-shared never calls it, but package main needs one.
func main() {}
