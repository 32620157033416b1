package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot/plotter"
)

// Series is one decision counter over time.
type Series struct {
	Profile, Rule, Action string
	// Points are (seconds, counter value), by time.
	Points plotter.XYs
}

// Rates is the counter's increase per second between consecutive samples, at the
// later one; a counter that went down (an enforcer restart) starts over.
func (s Series) Rates() plotter.XYs {
	var out plotter.XYs
	for i := 1; i < len(s.Points); i++ {
		a, b := s.Points[i-1], s.Points[i]
		if b.X <= a.X {
			continue
		}
		inc := b.Y - a.Y
		if inc < 0 {
			inc = b.Y
		}
		out = append(out, plotter.XY{X: b.X, Y: inc / (b.X - a.X)})
	}
	return out
}

// readSamples reads the CSV BenchmarkDecisionsInVM writes: comment lines (#), a
// header, then seconds,profile,rule,action,decisions. It returns one series per
// profile, rule and action, sorted by rule and action; a series that starts after the
// first scrape starts with 0 at that scrape (a counter exists from its first increment).
func readSamples(r io.Reader) ([]Series, error) {
	byKey := map[[3]string]*Series{}
	sc := bufio.NewScanner(r)
	line, header := 0, false
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if !header {
			if text != "seconds,profile,rule,action,decisions" {
				return nil, fmt.Errorf("line %d: header %q, want seconds,profile,rule,action,decisions", line, text)
			}
			header = true
			continue
		}
		f := strings.Split(text, ",")
		if len(f) != 5 {
			return nil, fmt.Errorf("line %d: %d fields, want 5", line, len(f))
		}
		t, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: seconds: %w", line, err)
		}
		v, err := strconv.ParseFloat(f[4], 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: decisions: %w", line, err)
		}
		key := [3]string{f[1], f[2], f[3]}
		s := byKey[key]
		if s == nil {
			s = &Series{Profile: f[1], Rule: f[2], Action: f[3]}
			byKey[key] = s
		}
		s.Points = append(s.Points, plotter.XY{X: t, Y: v})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(byKey) == 0 {
		return nil, fmt.Errorf("no samples")
	}
	// A counter appears with its rule's first decision; before that it was 0, from
	// the first scrape on.
	first := math.Inf(1)
	for _, s := range byKey {
		for _, p := range s.Points {
			first = min(first, p.X)
		}
	}
	var out []Series
	for _, s := range byKey {
		slices.SortStableFunc(s.Points, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		if s.Points[0].X > first {
			s.Points = append(plotter.XYs{{X: first, Y: 0}}, s.Points...)
		}
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b Series) int {
		return cmp.Or(cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Action, b.Action), cmp.Compare(a.Profile, b.Profile))
	})
	return out, nil
}
