package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestReadSamples(t *testing.T) {
	csv := `# kernel 6.12
seconds,profile,rule,action,decisions
0.000,ap.<namespace>.web,custom/no-secret,enforce,0
1.000,ap.<namespace>.web,custom/no-secret,enforce,4
1.000,ap.<namespace>.web,custom/audit-exec,audit,2
3.000,ap.<namespace>.web,custom/no-secret,enforce,10
2.000,ap.<namespace>.web,custom/audit-exec,audit,2
`
	series, err := readSamples(strings.NewReader(csv))
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 2 || series[0].Rule != "custom/audit-exec" || series[1].Rule != "custom/no-secret" {
		t.Fatalf("series %+v", series)
	}
	rates := series[1].Rates()
	if len(rates) != 2 || rates[0].X != 1 || rates[0].Y != 4 || rates[1].X != 3 || rates[1].Y != 3 {
		t.Errorf("rates of no-secret: %v, want (1, 4) (3, 3)", rates)
	}
	if p := series[0].Points; len(p) != 3 || p[0].X != 0 || p[0].Y != 0 {
		t.Errorf("audit-exec, which appeared at the second scrape: %v, want a 0 at 0 first", p)
	}
	if r := series[0].Rates(); len(r) != 2 || r[0].Y != 2 || r[1].Y != 0 {
		t.Errorf("rates of audit-exec: %v, want (1, 2) (2, 0)", r)
	}
}

func TestReadSamplesRejectsBadInput(t *testing.T) {
	tests := map[string]struct{ csv, want string }{
		"no header":       {"0,p,r,a,1\n", "header"},
		"a short line":    {"seconds,profile,rule,action,decisions\n0,p,r\n", "3 fields"},
		"a bad value":     {"seconds,profile,rule,action,decisions\n0,p,r,a,x\n", "decisions"},
		"nothing to plot": {"seconds,profile,rule,action,decisions\n", "no samples"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := readSamples(strings.NewReader(tc.csv)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestRunWritesAPNG(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "s.csv"), filepath.Join(dir, "s.png")
	writeFile(t, in, "seconds,profile,rule,action,decisions\n0,p,r,enforce,0\n1,p,r,enforce,3\n2,p,r,enforce,5\n")
	if err := run(in, out); err != nil {
		t.Fatal(err)
	}
	if head := readFile(t, out); !strings.HasPrefix(head, "\x89PNG\r\n") {
		t.Errorf("%s is not a PNG", out)
	}
}
