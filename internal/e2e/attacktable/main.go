// Command attacktable prints the attack suite's results (the JSON lines the
// TestAttack* tests append to $BASTION_ATTACK_REPORT) as a table, and exits
// 1 if any attack got more through than expected or the file holds no
// result at all.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
)

type result struct {
	Test     string `json:"test"`
	Attack   string `json:"attack"`
	Tries    int    `json:"tries"`
	Through  int    `json:"got_through"`
	Expected int    `json:"expected"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: attacktable REPORT.jsonl")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "attacktable:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open report: %w", err)
	}
	defer f.Close()
	var rs []result
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("parse report line %q: %w", sc.Text(), err)
		}
		rs = append(rs, r)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read report: %w", err)
	}
	if len(rs) == 0 {
		return fmt.Errorf("%s holds no results: did any TestAttack test run?", path)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "attack\ttries\tgot through\texpected\tresult\ttest")
	bad := 0
	for _, r := range rs {
		verdict := "ok"
		if r.Through > r.Expected {
			verdict = "FAIL"
			bad++
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%s\t%s\n", r.Attack, r.Tries, r.Through, r.Expected, verdict, r.Test)
	}
	w.Flush()
	if bad > 0 {
		return fmt.Errorf("%d of %d attacks got through", bad, len(rs))
	}
	return nil
}
