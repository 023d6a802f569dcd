// Command adapters runs the translation benchmarks of every surface and
// adapter that converts between wire formats, and reports the slowest:
// the request translation of a ~4 KB request and the translation of one
// streamed chunk. Each package benchmarks its own translation against a
// baseline in the same run (a plain encoding/json decode of the same
// bytes), so the table shows both.
//
// Packages run one at a time (-p 1): two benchmarks sharing the two cores
// would each measure the other.
//
// Convention: BenchmarkTranslateRequest (one 4 KB request per op) and
// BenchmarkTranslateChunk (one chunk per op, or a "ns/chunk" metric);
// sub-benchmarks whose name contains "baseline" are baselines.
//
// Its last line is machine-readable:
//
//	adapters: request_translate_us=<n> chunk_translate_ns=<n>
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"github.com/meridian-mesh/meridian/scripts/bench/readme"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Packages whose translations are measured.
var packages = []string{
	"./edge/api/anthropic",
	"./edge/api/responses",
	"./edge/provider/anthropic",
	"./edge/provider/gemini",
	"./edge/provider/ollama",
	"./edge/provider/bedrock",
}

type flags struct {
	benchtime string
	count     int
	readme    string
}

func main() {
	var f flags
	flag.StringVar(&f.benchtime, "benchtime", "1s", "go test -benchtime per benchmark")
	flag.IntVar(&f.count, "count", 3, "runs per benchmark; the median is reported")
	flag.StringVar(&f.readme, "readme", "", "replace the bench:adapters section of this markdown file with the results")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, f); err != nil {
		fmt.Fprintln(os.Stderr, "adapters:", err)
		os.Exit(1)
	}
}

type result struct {
	pkg, name string
	nsPerOp   []float64 // per run
	nsChunk   []float64 // the ns/chunk metric, when reported
}

func run(ctx context.Context, f flags) error {
	args := []string{"test", "-p", "1", "-run", "^$", "-bench", "^BenchmarkTranslate(Request|Chunk)", "-benchmem",
		"-benchtime", f.benchtime, "-count", strconv.Itoa(f.count)}
	cmd := exec.CommandContext(ctx, "go", append(args, packages...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		os.Stdout.Write(out)
		return fmt.Errorf("go test -bench: %w", err)
	}
	results := parse(out)
	if len(results) == 0 {
		return fmt.Errorf("no BenchmarkTranslate* results in:\n%s", out)
	}
	var table strings.Builder
	fmt.Fprintln(&table, "| package | benchmark | median | unit |")
	fmt.Fprintln(&table, "|---|---|---:|---|")
	var reqNs, chunkNs float64
	for _, r := range results {
		isBaseline := strings.Contains(r.name, "baseline")
		switch {
		case strings.HasPrefix(r.name, "TranslateRequest"):
			v := median(r.nsPerOp)
			fmt.Fprintf(&table, "| %s | %s | %.1f | µs/request |\n", r.pkg, r.name, v/1000)
			if !isBaseline {
				reqNs = max(reqNs, v)
			}
		case strings.HasPrefix(r.name, "TranslateChunk"):
			v := median(r.nsPerOp)
			if len(r.nsChunk) > 0 {
				v = median(r.nsChunk)
			}
			fmt.Fprintf(&table, "| %s | %s | %.0f | ns/chunk |\n", r.pkg, r.name, v)
			if !isBaseline {
				chunkNs = max(chunkNs, v)
			}
		}
	}
	summary := fmt.Sprintf("adapters: request_translate_us=%.1f chunk_translate_ns=%.0f", reqNs/1000, chunkNs)
	fmt.Print(table.String())
	if f.readme != "" {
		section := "\n" + table.String() + "\n`" + summary + "`\n\n_Median of " + strconv.Itoa(f.count) + " runs of " + f.benchtime +
			" each, " + time.Now().UTC().Format("2006-01-02 15:04 MST") + ", " + runtime.GOOS + "/" + runtime.GOARCH +
			", " + strconv.Itoa(runtime.NumCPU()) + " CPUs, " + runtime.Version() + "._\n\n"
		if err := readme.Replace(f.readme, "adapters", section); err != nil {
			fmt.Fprintln(os.Stderr, "adapters: warning:", err)
		}
	}
	fmt.Println()
	fmt.Println(summary)
	return nil
}

// parse reads go test -bench output: "pkg: X" lines name the package of
// the "BenchmarkY-N  iters  v ns/op  ... v ns/chunk" lines after them.
func parse(out []byte) []*result {
	var order []*result
	byKey := map[string]*result{}
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(p, "github.com/meridian-mesh/meridian/")
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(fields[0], "Benchmark")
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i]
		}
		key := pkg + " " + name
		r := byKey[key]
		if r == nil {
			r = &result{pkg: pkg, name: name}
			byKey[key] = r
			order = append(order, r)
		}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			switch fields[i+1] {
			case "ns/op":
				r.nsPerOp = append(r.nsPerOp, v)
			case "ns/chunk":
				r.nsChunk = append(r.nsChunk, v)
			}
		}
	}
	return order
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}
