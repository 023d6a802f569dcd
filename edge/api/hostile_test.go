package api_test

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/api/anthropic"
	"github.com/meridian-mesh/meridian/edge/api/openai"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/metrics"
)

// nested returns a request body in a surface's format whose extra field
// "x" holds arrays nested so that the body's deepest level is depth (the
// body object itself is level 1). pad pads it with more of the same
// nesting, closed before "x" is, to reach a size.
func nested(anth bool, depth int) string {
	head := `{"model":"m","messages":[{"role":"user","content":"hi"}],"x":`
	if anth {
		head = `{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}],"x":`
	}
	return head + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `}`
}

var atByte = regexp.MustCompile(`at byte ([0-9]+)`)

// TestDepthLimitSameOnBothSurfaces sends bodies nested exactly to the
// limit and one level past it to both surfaces: both accept the first
// and refuse the second with a 400 in their own format; and a 4 MiB body
// of nested arrays is refused having scanned no further than the limit.
func TestDepthLimitSameOnBothSurfaces(t *testing.T) {
	s := newSurfaces(t, func(string) (*llm.Response, error) { return &llm.Response{Body: []byte(completion)}, nil })
	if err := s.gw.SetTable(tab(1, "p", clientKey)); err != nil {
		t.Fatal(err)
	}
	for _, anth := range []bool{false, true} {
		path, hdr, name := "/v1/chat/completions", []string(nil), "openai"
		if anth {
			path, hdr, name = "/v1/messages", []string{"anthropic-version", "2023-06-01"}, "anthropic"
		}
		if w := s.post(path, nested(anth, 512), hdr...); w.Code != http.StatusOK {
			t.Errorf("%s: 512 levels got %d: %s", name, w.Code, w.Body)
		}
		w := s.post(path, nested(anth, 513), hdr...)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "512") {
			t.Errorf("%s: 513 levels got %d: %s, want a 400 naming the limit", name, w.Code, w.Body)
		}
		if anth != strings.HasPrefix(w.Body.String(), `{"type":"error"`) {
			t.Errorf("%s: refusal not in the client's format: %s", name, w.Body)
		}

		// 4 MiB of nesting: the refusal names where scanning stopped,
		// which must be at the limit, not at the end of the body.
		head := strings.TrimSuffix(nested(anth, 1), "}")
		depth := (4<<20 - len(head)) / 2
		deep := head + strings.Repeat("[", depth) + strings.Repeat("]", depth) + "}"
		w = s.post(path, deep, hdr...)
		m := atByte.FindStringSubmatch(w.Body.String())
		if w.Code != http.StatusBadRequest || m == nil {
			t.Fatalf("%s: 4 MiB of nesting got %d: %.300s", name, w.Code, w.Body)
		}
		if at, _ := strconv.Atoi(m[1]); at > len(head)+512 {
			t.Errorf("%s: 4 MiB of nesting was scanned to byte %d, past the limit at byte %d", name, at, len(head)+512)
		}
	}
}

// TestUnknownModelNamesAddNoSeries sends 100,000 requests, each naming a
// model nobody has, across both surfaces: the metrics keep one series
// for them all, labelled "unknown".
func TestUnknownModelNamesAddNoSeries(t *testing.T) {
	s := newSurfaces(t, func(string) (*llm.Response, error) { return &llm.Response{Body: []byte(completion)}, nil })
	m := metrics.New()
	s.cfg.Metrics = m
	s.mux = http.NewServeMux()
	openai.New(s.cfg).Register(s.mux)
	anthropic.New(s.cfg).Register(s.mux)
	if err := s.gw.SetTable(tab(1, "p", clientKey)); err != nil {
		t.Fatal(err)
	}
	series := func() (int, string) {
		w := httptest.NewRecorder()
		m.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		n := 0
		for _, l := range strings.Split(w.Body.String(), "\n") {
			if strings.HasPrefix(l, "meridian_") {
				n++
			}
		}
		return n, w.Body.String()
	}
	send := func(i int) {
		model := "made-up-" + strconv.Itoa(i)
		var w *httptest.ResponseRecorder
		if i%2 == 0 {
			w = s.post("/v1/chat/completions", `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
		} else {
			w = s.post("/v1/messages", `{"model":"`+model+`","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`, "anthropic-version", "2023-06-01")
		}
		if w.Code != http.StatusNotFound {
			t.Fatalf("%s: %d %s", model, w.Code, w.Body)
		}
	}
	send(0)
	before, _ := series()
	n := 100_000
	if testing.Short() {
		n = 2_000
	}
	for i := 1; i < n; i++ {
		send(i)
	}
	after, scrape := series()
	if after != before {
		t.Fatalf("%d made-up model names grew the metrics from %d to %d series", n, before, after)
	}
	if !strings.Contains(scrape, `model="`+api.LabelUnknown+`"`) {
		t.Fatalf("made-up models are not counted as unknown:\n%s", scrape)
	}
}
