package console

import (
	"fmt"
	"html/template"
	"math"
	"slices"
	"strings"
	"time"
)

// The map is an equirectangular projection of the whole world onto a
// mapW × mapH SVG viewBox: x grows with longitude, y with latitude
// southwards.
const (
	mapW = 1000
	mapH = 500
)

// project places a latitude and longitude, degrees, on the map.
func project(lat, lon float64) (x, y float64) {
	lat = math.Max(-90, math.Min(90, lat))
	lon = math.Max(-180, math.Min(180, lon))
	return (lon + 180) / 360 * mapW, (90 - lat) / 180 * mapH
}

// Health of a PoP, as the map colours it.
const (
	healthCurrent = "current"
	healthBehind  = "behind"
	healthStale   = "stale"
	healthSilent  = "silent"
	healthUnknown = "unreported"
)

// fleet is the map page's data.
type fleet struct {
	Distribution     bool
	Leader           bool
	StateRevision    uint64
	TableRevision    uint64
	Rejected         string
	RejectedRevision uint64
	Regions          []mapRegion
	PoPs             []pop
	Models           []modelTraffic
	// Graticule is the map's grid of meridians and parallels.
	Graticule []line
	// Land is the continents' rough outlines, as SVG points lists.
	Land []string
	W, H int
	// Requests and Cost are the fleet's totals over the last 24 hours.
	Requests uint64
	Cost     string
}

type mapRegion struct {
	ID, Name string
	Lat, Lon float64
	X, Y     float64
	PoPs     int
}

// pop is one node (an edge, a point of presence) on the map.
type pop struct {
	ID, Region  string
	X, Y        float64
	Health      string
	Revision    uint64
	Lag         uint64
	LastReport  time.Time
	Placed      []string
	ReadyModels []string
}

type modelTraffic struct {
	Model     string
	Requests  uint64
	TokensIn  uint64
	TokensOut uint64
	Cost      string
	Placed    int
	Ready     int
}

type line struct{ X1, Y1, X2, Y2 float64 }

func buildFleet(regions []region, nodes []node, st status, hasDist bool, traffic []usageRow) fleet {
	f := fleet{Distribution: hasDist, Leader: st.Leader, StateRevision: st.StateRevision, TableRevision: st.TableRevision,
		Rejected: st.Rejected, RejectedRevision: st.RejectedRevision, W: mapW, H: mapH, Land: land()}
	for lon := -150.0; lon <= 150; lon += 30 {
		x, _ := project(0, lon)
		f.Graticule = append(f.Graticule, line{x, 0, x, mapH})
	}
	for lat := -60.0; lat <= 60; lat += 30 {
		_, y := project(lat, 0)
		f.Graticule = append(f.Graticule, line{0, y, mapW, y})
	}
	at := map[string]*mapRegion{}
	for _, r := range regions {
		x, y := project(r.Latitude, r.Longitude)
		f.Regions = append(f.Regions, mapRegion{ID: r.ID, Name: r.Name, Lat: r.Latitude, Lon: r.Longitude, X: x, Y: y})
	}
	for i := range f.Regions {
		at[f.Regions[i].ID] = &f.Regions[i]
	}
	edges := map[string]edgeStatus{}
	for _, e := range st.Edges {
		edges[e.Node] = e
	}
	placed := map[string][]string{}
	perModel := map[string]*modelTraffic{}
	modelOf := func(m string) *modelTraffic {
		if perModel[m] == nil {
			perModel[m] = &modelTraffic{Model: m, Cost: "0"}
		}
		return perModel[m]
	}
	for _, p := range st.Placements {
		mt := modelOf(p.Model)
		mt.Placed += len(p.Nodes)
		mt.Ready += len(p.Ready)
		for _, n := range p.Nodes {
			placed[n] = append(placed[n], p.Model)
		}
	}
	for _, n := range nodes {
		p := pop{ID: n.ID, Region: n.Region, Health: healthUnknown, Placed: placed[n.ID]}
		if e, ok := edges[n.ID]; ok {
			p.Revision, p.Lag, p.LastReport, p.ReadyModels = e.Revision, e.Lag, e.LastReport, e.ReadyModels
			switch {
			case e.Silent:
				p.Health = healthSilent
			case e.Stale:
				p.Health = healthStale
			case e.Lag > 0:
				p.Health = healthBehind
			default:
				p.Health = healthCurrent
			}
		}
		if r := at[n.Region]; r != nil {
			// The region's PoPs sit on a small ring around it, so that
			// several never hide each other.
			a := float64(r.PoPs)*2.4 - math.Pi/2
			d := 14.0
			p.X, p.Y = r.X+d*math.Cos(a), r.Y+d*math.Sin(a)
			r.PoPs++
		}
		f.PoPs = append(f.PoPs, p)
	}
	var nano int64
	for _, u := range traffic {
		mt := modelOf(u.Model)
		mt.Requests, mt.TokensIn, mt.TokensOut, mt.Cost = u.Requests, u.TokensIn, u.TokensOut, u.CostUSD
		f.Requests += u.Requests
		nano += u.CostNanoUSD
	}
	f.Cost = usd(nano)
	for _, mt := range perModel {
		f.Models = append(f.Models, *mt)
	}
	slices.SortFunc(f.Models, func(a, b modelTraffic) int { return strings.Compare(a.Model, b.Model) })
	return f
}

// usd prints nano-dollars as dollars, to the cent below a thousand
// and whole above.
func usd(nano int64) string {
	d := float64(nano) / 1e9
	if d != 0 && math.Abs(d) < 0.01 {
		return fmt.Sprintf("%.6f", d)
	}
	return fmt.Sprintf("%.2f", d)
}

// chart is a stacked bar chart of cost over time, one colour per group.
type chart struct {
	W, H   int
	Bars   []bar
	Legend []legend
	// Max is the tallest bar's cost, for the axis label.
	Max   string
	Empty bool
}

type bar struct {
	Label    string
	X, Width float64
	Parts    []part
	Total    string
}

type part struct {
	Group string
	Y, H  float64
	Class string
	Cost  string
}

type legend struct {
	Group, Class string
}

const (
	chartW      = 900
	chartH      = 260
	chartBottom = 230 // y of the axis; labels sit below it
)

// buildChart lays out rows grouped by bucket ("hour" or "day") and by
// (tenant, key or model) from from to now.
func buildChart(rows []usageRow, by, bucket string, from, now time.Time) chart {
	ch := chart{W: chartW, H: chartH, Empty: len(rows) == 0}
	var buckets []string
	step := 24 * time.Hour
	format := time.DateOnly
	if bucket == "hour" {
		step, format = time.Hour, time.RFC3339
	}
	for t := from; !t.After(now); t = t.Add(step) {
		buckets = append(buckets, t.Format(format))
	}
	groupOf := func(u usageRow) string {
		switch by {
		case "key":
			return u.Key
		case "model":
			return u.Model
		}
		return u.Tenant
	}
	var groups []string
	cost := map[string]map[string]int64{}
	for _, u := range rows {
		b := u.Day
		if bucket == "hour" {
			b = u.Hour
		}
		g := groupOf(u)
		if !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
		if cost[b] == nil {
			cost[b] = map[string]int64{}
		}
		cost[b][g] += u.CostNanoUSD
	}
	slices.Sort(groups)
	class := map[string]string{}
	for i, g := range groups {
		class[g] = fmt.Sprintf("c%d", i%8)
		name := g
		if name == "" {
			name = "(none)"
		}
		ch.Legend = append(ch.Legend, legend{Group: name, Class: class[g]})
	}
	var top int64
	for _, b := range buckets {
		var sum int64
		for _, v := range cost[b] {
			sum += v
		}
		top = max(top, sum)
	}
	ch.Max = usd(top)
	if len(buckets) == 0 {
		return ch
	}
	slot := float64(chartW) / float64(len(buckets))
	for i, b := range buckets {
		br := bar{X: float64(i)*slot + slot*0.15, Width: slot * 0.7}
		if bucket == "hour" {
			br.Label = b[11:13] + "h"
		} else {
			br.Label = b[5:]
		}
		y := float64(chartBottom)
		var sum int64
		for _, g := range groups {
			v := cost[b][g]
			if v <= 0 || top <= 0 {
				continue
			}
			h := float64(v) / float64(top) * (chartBottom - 10)
			y -= h
			sum += v
			name := g
			if name == "" {
				name = "(none)"
			}
			br.Parts = append(br.Parts, part{Group: name, Y: y, H: h, Class: class[g], Cost: usd(v)})
		}
		br.Total = usd(sum)
		ch.Bars = append(ch.Bars, br)
	}
	return ch
}

var funcs = template.FuncMap{
	"join": func(s []string) string {
		if len(s) == 0 {
			return "–"
		}
		return strings.Join(s, ", ")
	},
	"f1":  func(v float64) string { return fmt.Sprintf("%.1f", v) },
	"num": func(v float64) string { return fmt.Sprintf("%.4g", v) },
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"contains": slices.Contains[[]string, string],
	"dash": func(s string) string {
		if s == "" {
			return "–"
		}
		return s
	},
	"add":  func(a, b int) int { return a + b },
	"list": func(s ...string) []string { return s },
}

// land returns rough outlines of the continents (a few dozen points
// each, degrees), only so that the map reads as one; nothing is placed
// by them.
func land() []string {
	out := make([]string, 0, len(continents))
	for _, c := range continents {
		var b strings.Builder
		for i := 0; i+1 < len(c); i += 2 {
			x, y := project(c[i], c[i+1])
			fmt.Fprintf(&b, "%.1f,%.1f ", x, y)
		}
		out = append(out, strings.TrimSpace(b.String()))
	}
	return out
}

// continents are latitude, longitude pairs, coarse.
var continents = [][]float64{
	// North America
	{70, -165, 71, -156, 70, -140, 69, -120, 72, -95, 68, -80, 62, -75, 58, -64, 52, -56, 47, -53, 44, -66, 41, -70, 35, -76, 31, -81, 25, -80,
		30, -84, 29, -95, 26, -97, 21, -97, 18, -94, 21, -87, 16, -88, 15, -84, 9, -79, 8, -83, 13, -88, 16, -95, 20, -105, 23, -110, 31, -114,
		32, -117, 38, -123, 43, -124, 48, -125, 55, -132, 59, -139, 60, -147, 57, -157, 60, -162, 65, -168},
	// Greenland
	{60, -44, 65, -40, 70, -22, 77, -18, 82, -30, 83, -45, 80, -65, 76, -70, 70, -54, 65, -52},
	// South America
	{12, -72, 10, -62, 5, -52, 0, -50, -5, -35, -13, -38, -23, -42, -28, -48, -35, -54, -39, -62, -42, -64, -48, -66, -52, -69, -55, -67,
		-54, -72, -46, -75, -38, -73, -30, -71, -18, -70, -14, -76, -5, -81, 0, -80, 4, -77, 8, -77},
	// Europe and Asia
	{36, -9, 43, -9, 44, -1, 48, -5, 51, 2, 54, 8, 57, 8, 59, 5, 63, 5, 68, 13, 71, 26, 69, 40, 67, 41, 69, 60, 73, 70, 72, 80, 76, 100,
		73, 113, 72, 130, 71, 150, 69, 170, 66, 179.9, 64, 178, 60, 163, 52, 156, 60, 150, 59, 142, 54, 137, 48, 140, 42, 132, 38, 129, 35, 126,
		38, 121, 31, 122, 23, 117, 21, 110, 17, 107, 10, 107, 9, 104, 13, 100, 7, 100, 1, 104, 8, 98, 16, 97, 16, 95, 22, 92, 22, 89, 20, 86,
		15, 80, 8, 77, 17, 73, 22, 69, 25, 66, 25, 57, 27, 56, 24, 52, 30, 48, 27, 50, 22, 59, 18, 56, 13, 45, 17, 42, 28, 34, 31, 32, 36, 36,
		37, 27, 41, 26, 40, 23, 37, 22, 40, 19, 45, 13, 42, 15, 38, 16, 41, 12, 44, 9, 43, 3, 39, 0, 36, -6},
	// Africa
	{35, -6, 37, 10, 33, 11, 31, 19, 32, 25, 31, 32, 22, 37, 15, 40, 12, 43, 11, 51, 2, 45, -4, 40, -10, 40, -16, 40, -25, 35, -34, 26,
		-34, 18, -28, 15, -17, 12, -10, 13, -5, 12, 0, 9, 4, 7, 5, -2, 5, -7, 7, -12, 11, -16, 15, -17, 21, -17, 28, -13, 32, -9},
	// Australia
	{-11, 142, -17, 146, -25, 153, -33, 152, -38, 148, -38, 140, -35, 136, -32, 132, -35, 117, -32, 115, -22, 114, -20, 119, -14, 126,
		-12, 131, -12, 137, -17, 140},
	// Great Britain and Ireland
	{50, -5, 51, 1, 53, 1, 56, -2, 58, -3, 58, -6, 55, -5, 53, -3, 52, -5},
	{52, -10, 55, -8, 55, -6, 53, -6},
	// Japan
	{31, 130, 34, 135, 35, 140, 40, 142, 45, 142, 43, 140, 38, 139, 35, 132},
	// Madagascar
	{-12, 49, -16, 50, -25, 47, -25, 44, -17, 44},
	// Indonesia, coarse
	{5, 95, -6, 106, -8, 114, -6, 106, 0, 100},
	{-1, 109, 7, 117, 1, 119, -4, 116},
	{-1, 131, -3, 141, -9, 147, -10, 142, -7, 138},
	// New Zealand
	{-35, 173, -41, 176, -46, 170, -44, 168, -40, 173},
}
