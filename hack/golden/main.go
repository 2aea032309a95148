// Command golden prints the next fire times that robfig/cron v3 — the parser and scheduler the
// Kubernetes CronJob controller uses — computes for a table of cases. Its output is the golden
// file tests/unit/data/robfig_next.json, which pins operator/bgjob/cronspec.py to the real
// controller's behaviour, DST changes included.
//
//	go run . < cases.json > ../../tests/unit/data/robfig_next.json
//
// The golden file is also valid input (its "next" fields are recomputed), so a new case is an
// entry {"cron", "timeZone", "after"} appended to a copy of it, fed back through this command.
package main

import (
	"encoding/json"
	"os"
	"time"

	"github.com/robfig/cron/v3"
)

type testCase struct {
	Cron     string   `json:"cron"`
	TimeZone string   `json:"timeZone"`
	After    string   `json:"after"`
	Next     []string `json:"next"`
	Error    bool     `json:"error,omitempty"`
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	for i := range cases {
		c := &cases[i]
		c.Next = []string{}
		sched, err := cron.ParseStandard("TZ=" + c.TimeZone + " " + c.Cron)
		if err != nil {
			c.Error = true
			continue
		}
		t, err := time.Parse(time.RFC3339, c.After)
		if err != nil {
			panic(err)
		}
		for n := 0; n < 6; n++ {
			t = sched.Next(t)
			if t.IsZero() {
				break
			}
			c.Next = append(c.Next, t.UTC().Format(time.RFC3339))
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(cases); err != nil {
		panic(err)
	}
}
