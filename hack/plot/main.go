// Command plot draws docs/observability/decisions.png, the figure of
// docs/observability.md: the enforcer's decisions over time by rule, from the samples
// e2e's BenchmarkDecisionsInVM scraped from the enforcer's real /metrics in a VM
// (hack/plot-decisions.sh runs both).
//
//	go run . -in ../../docs/observability/decisions.csv -out ../../docs/observability/decisions.png
//
// The samples are counters (podarmor_enforcer_decisions_total); the upper panel shows
// their rate between consecutive scrapes, as Prometheus' rate() over one scrape
// interval would, the lower panel the counters themselves.
package main

import (
	"flag"
	"fmt"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

func main() {
	in := flag.String("in", "", "CSV samples (seconds,profile,rule,action,decisions)")
	out := flag.String("out", "", "PNG file to write")
	flag.Parse()
	if *in == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: plot -in SAMPLES.csv -out FIGURE.png")
		os.Exit(2)
	}
	if err := run(*in, *out); err != nil {
		fmt.Fprintf(os.Stderr, "plot: %v\n", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	series, err := readSamples(f)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	img, err := figure(series)
	if err != nil {
		return err
	}
	w, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		w.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	return w.Close()
}

// figure draws the rate panel above the counter panel.
func figure(series []Series) (*vgimg.Canvas, error) {
	rates := plot.New()
	rates.Title.Text = "podarmor_enforcer_decisions_total: decisions per second by rule"
	rates.Y.Label.Text = "decisions / s"
	rates.X.Label.Text = "seconds"
	counts := plot.New()
	counts.Title.Text = "decisions so far (the counters, scraped every second)"
	counts.Y.Label.Text = "decisions"
	counts.X.Label.Text = "seconds"
	for i, s := range series {
		name := fmt.Sprintf("%s (%s)", s.Rule, s.Action)
		for _, p := range []struct {
			plot *plot.Plot
			xys  plotter.XYs
		}{{rates, s.Rates()}, {counts, s.Points}} {
			line, err := plotter.NewLine(p.xys)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			line.Color = plotutil.Color(i)
			line.Width = vg.Points(1.5)
			line.Dashes = plotutil.Dashes(i)
			p.plot.Add(line)
			p.plot.Legend.Add(name, line)
		}
	}
	for _, p := range []*plot.Plot{rates, counts} {
		p.Add(plotter.NewGrid())
		p.Legend.Top = true
		p.Legend.Left = true
		p.X.Min, p.Y.Min = 0, 0
	}
	img := vgimg.New(9*vg.Inch, 7*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 6,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4}
	grid := [][]*plot.Plot{{rates}, {counts}}
	canvases := plot.Align(grid, tiles, dc)
	for r := range grid {
		grid[r][0].Draw(canvases[r][0])
	}
	return img, nil
}
