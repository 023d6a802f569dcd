package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/shared/table"
)

// fake is a provider whose answers a test scripts.
type fake struct {
	mu     sync.Mutex
	calls  int
	models []string
	do     func(n int) (*llm.Response, error)
	closed bool
}

func (f *fake) Do(ctx context.Context, req *llm.Request, model string) (*llm.Response, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.models = append(f.models, model)
	f.mu.Unlock()
	return f.do(n)
}

func (f *fake) Close() { f.mu.Lock(); f.closed = true; f.mu.Unlock() }

type chunks struct {
	data []string
	err  error // after data
	i    int
}

func (c *chunks) Next() (*llm.Chunk, error) {
	if c.i < len(c.data) {
		c.i++
		return &llm.Chunk{Raw: []byte(c.data[c.i-1])}, nil
	}
	if c.err != nil {
		return nil, c.err
	}
	return nil, io.EOF
}
func (c *chunks) Usage() (llm.Usage, bool) { return llm.Usage{}, false }
func (c *chunks) Close() error             { return nil }

func ok(body string) func(int) (*llm.Response, error) {
	return func(int) (*llm.Response, error) { return &llm.Response{Body: []byte(body)}, nil }
}

func fail(status int, retryable bool) func(int) (*llm.Response, error) {
	return func(int) (*llm.Response, error) {
		return nil, &llm.Error{Status: status, Type: llm.TypeUpstream, Message: "boom", Retryable: retryable}
	}
}

func newGateway(t *testing.T, fakes map[string]*fake, routes ...*table.Route) *Gateway {
	t.Helper()
	g := New(Config{
		NewProvider: func(p table.Provider) (provider.Provider, error) {
			f, ok := fakes[p.ID]
			if !ok {
				return nil, errors.New("no fake")
			}
			return f, nil
		},
		BreakerThreshold: 2,
	})
	tab := &table.Table{}
	for id := range fakes {
		tab.Providers = append(tab.Providers, table.Provider{ID: id, Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1"})
	}
	for _, r := range routes {
		tab.Models = append(tab.Models, table.Model{ID: r.Model})
	}
	tab.Routes = routes
	if err := g.SetTable(tab); err != nil {
		t.Fatal(err)
	}
	return g
}

func route(model string, providers ...string) *table.Route {
	r := &table.Route{Model: model}
	for _, p := range providers {
		r.Targets = append(r.Targets, table.Target{Provider: p, Model: p + "-" + model})
	}
	return r
}

func TestUnknownModel(t *testing.T) {
	g := newGateway(t, map[string]*fake{"a": {do: ok("{}")}}, route("m", "a"))
	_, err := g.Do(context.Background(), &llm.Request{Model: "nope"})
	var e *llm.Error
	if !errors.As(err, &e) || e.Status != http.StatusNotFound || e.Code != "model_not_found" {
		t.Fatalf("err = %v, want 404 model_not_found", err)
	}
}

func TestPrimaryAndUpstreamModel(t *testing.T) {
	a := &fake{do: ok(`{"id":"x"}`)}
	g := newGateway(t, map[string]*fake{"a": a}, route("m", "a"))
	res, err := g.Do(context.Background(), &llm.Request{Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Response.Body) != `{"id":"x"}` || a.models[0] != "a-m" {
		t.Fatalf("body %s, upstream model %v", res.Response.Body, a.models)
	}
	if got := res.Route.Header(); got != "target=provider/a; model=a-m; attempt=1; reason=primary; kind=provider; strategy=ordered" {
		t.Fatalf("route header = %q", got)
	}
}

func TestFailoverOnRetryable(t *testing.T) {
	a := &fake{do: fail(502, true)}
	b := &fake{do: ok("{}")}
	g := newGateway(t, map[string]*fake{"a": a, "b": b}, route("m", "a", "b"))
	res, err := g.Do(context.Background(), &llm.Request{Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Route.Target != "provider/b" || res.Route.Reason != "failover" || res.Route.Attempt != 2 {
		t.Fatalf("route = %+v", res.Route)
	}
	if !strings.Contains(res.Route.Header(), "failed=provider/a(502)") {
		t.Fatalf("header %q does not explain the failover", res.Route.Header())
	}
}

func TestNoFailoverOnClientError(t *testing.T) {
	a := &fake{do: fail(400, false)}
	b := &fake{do: ok("{}")}
	g := newGateway(t, map[string]*fake{"a": a, "b": b}, route("m", "a", "b"))
	_, err := g.Do(context.Background(), &llm.Request{Model: "m"})
	if e := llm.AsError(err); e.Status != 400 {
		t.Fatalf("err = %v, want the 400", err)
	}
	if b.calls != 0 {
		t.Fatal("a request the client got wrong was retried on another target")
	}
}

func TestAllTargetsFailReturnsLastError(t *testing.T) {
	a := &fake{do: fail(502, true)}
	b := &fake{do: fail(429, true)}
	g := newGateway(t, map[string]*fake{"a": a, "b": b}, route("m", "a", "b"))
	res, err := g.Do(context.Background(), &llm.Request{Model: "m"})
	if e := llm.AsError(err); e.Status != 429 {
		t.Fatalf("err = %v, want the last target's 429", err)
	}
	if res.Route.Attempt != 2 || len(res.Route.Failed) != 2 {
		t.Fatalf("route = %+v", res.Route)
	}
}

func TestStreamCutBeforeFirstChunkFailsOver(t *testing.T) {
	a := &fake{do: func(int) (*llm.Response, error) {
		return &llm.Response{Stream: &chunks{err: llm.ErrStreamCut}}, nil
	}}
	b := &fake{do: func(int) (*llm.Response, error) {
		return &llm.Response{Stream: &chunks{data: []string{"one", "two"}}}, nil
	}}
	g := newGateway(t, map[string]*fake{"a": a, "b": b}, route("m", "a", "b"))
	res, err := g.Do(context.Background(), &llm.Request{Model: "m", Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		d, err := res.Response.Stream.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(d.Raw))
	}
	if strings.Join(got, ",") != "one,two" || res.Route.Target != "provider/b" {
		t.Fatalf("got %v from %s", got, res.Route.Target)
	}
}

func TestBreakerSkipsFailingTarget(t *testing.T) {
	a := &fake{do: fail(503, true)}
	b := &fake{do: ok("{}")}
	g := newGateway(t, map[string]*fake{"a": a, "b": b}, route("m", "a", "b"))
	for range 5 {
		if _, err := g.Do(context.Background(), &llm.Request{Model: "m"}); err != nil {
			t.Fatal(err)
		}
	}
	if a.calls != 2 {
		t.Fatalf("failing target called %d times; the breaker (threshold 2) should stop at 2", a.calls)
	}
	res, _ := g.Do(context.Background(), &llm.Request{Model: "m"})
	if !strings.Contains(res.Route.Header(), "provider/a(breaker-open)") {
		t.Fatalf("route %q does not say the breaker skipped a", res.Route.Header())
	}
}

func TestLastTargetTriedEvenWithOpenBreaker(t *testing.T) {
	a := &fake{do: fail(503, true)}
	g := newGateway(t, map[string]*fake{"a": a}, route("m", "a"))
	for range 4 {
		g.Do(context.Background(), &llm.Request{Model: "m"})
	}
	if a.calls != 4 {
		t.Fatalf("sole target called %d times, want every request to try it", a.calls)
	}
}

func TestInvalidTableKeepsOld(t *testing.T) {
	a := &fake{do: ok("{}")}
	g := newGateway(t, map[string]*fake{"a": a}, route("m", "a"))
	bad := &table.Table{Models: []table.Model{{ID: "x"}}, Routes: []*table.Route{{Model: "x", Targets: []table.Target{{Provider: "missing"}}}}}
	err := g.SetTable(bad)
	if !errors.Is(err, table.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	if _, err := g.Do(context.Background(), &llm.Request{Model: "m"}); err != nil {
		t.Fatalf("old table not kept: %v", err)
	}
}

func TestSetTableReusesUnchangedProviders(t *testing.T) {
	built := map[string]int{}
	g := New(Config{NewProvider: func(p table.Provider) (provider.Provider, error) {
		built[p.ID]++
		return &fake{do: ok("{}")}, nil
	}})
	mk := func(rev uint64, url string) *table.Table {
		return &table.Table{
			Revision:  rev,
			Providers: []table.Provider{{ID: "a", Kind: "openai", BaseURL: "http://127.0.0.1:1/v1"}, {ID: "b", Kind: "openai", BaseURL: url}},
			Models:    []table.Model{{ID: "m"}},
			Routes:    []*table.Route{{Model: "m", Targets: []table.Target{{Provider: "a"}, {Provider: "b"}}}},
		}
	}
	if err := g.SetTable(mk(1, "http://127.0.0.1:2/v1")); err != nil {
		t.Fatal(err)
	}
	old := g.state.Load().providers["b"].p.(*fake)
	if err := g.SetTable(mk(2, "http://127.0.0.1:3/v1")); err != nil {
		t.Fatal(err)
	}
	if built["a"] != 1 || built["b"] != 2 {
		t.Fatalf("built = %v, want a once and b twice", built)
	}
	if !old.closed {
		t.Fatal("replaced provider was not closed")
	}
	if g.Table().Revision() != 2 {
		t.Fatalf("revision = %d", g.Table().Revision())
	}
}

func TestCanceledContext(t *testing.T) {
	a := &fake{}
	b := &fake{do: ok("{}")}
	ctx, cancel := context.WithCancel(context.Background())
	a.do = func(int) (*llm.Response, error) { cancel(); return nil, context.Canceled }
	g := newGateway(t, map[string]*fake{"a": a, "b": b}, route("m", "a", "b"))
	_, err := g.Do(ctx, &llm.Request{Model: "m"})
	if !errors.Is(err, context.Canceled) || b.calls != 0 {
		t.Fatalf("err = %v, b.calls = %d: a canceled request must not fail over", err, b.calls)
	}
}

func TestCapabilities(t *testing.T) {
	a := &fake{do: ok("{}")}
	g := newGateway(t, map[string]*fake{"a": a}, route("text-only", "a"), route("any", "a"))
	tab := *g.Table().Table()
	tab.Models = []table.Model{{ID: "text-only", Capabilities: []string{"tools"}}, {ID: "any"}}
	if err := g.SetTable(&tab); err != nil {
		t.Fatal(err)
	}
	image := `{"model":"text-only","messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]}]}`
	_, err := g.Do(context.Background(), &llm.Request{Op: llm.OpChat, Model: "text-only", Body: []byte(image)})
	if e := llm.AsError(err); e.Status != 400 || e.Param != "messages" || !strings.Contains(e.Message, "text only") {
		t.Fatalf("image to a text-only model: %v", err)
	}
	// The same request typed (as the Anthropic surface builds it).
	typed := &llm.Request{Op: llm.OpChat, Model: "text-only", Chat: &llm.ChatRequest{Messages: []llm.Message{{Role: "user",
		Content: llm.PartsContent([]llm.ContentPart{{Type: "image_url", ImageURL: &llm.ImageURL{URL: "https://x/y.png"}}})}}}}
	if _, err := g.Do(context.Background(), typed); llm.AsError(err).Status != 400 {
		t.Fatalf("typed image to a text-only model: %v", err)
	}
	if a.calls != 0 {
		t.Fatal("a refused request reached the upstream")
	}
	// Text to the text-only model, and images to a model that declares nothing, pass.
	if _, err := g.Do(context.Background(), &llm.Request{Op: llm.OpChat, Model: "text-only", Body: []byte(`{"model":"text-only","messages":[{"role":"user","content":"hi"}]}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Do(context.Background(), &llm.Request{Op: llm.OpChat, Model: "any", Body: []byte(strings.Replace(image, "text-only", "any", 1))}); err != nil {
		t.Fatal(err)
	}
}

func TestPlanExplainsTheRoute(t *testing.T) {
	a := &fake{do: fail(503, true)}
	b := &fake{do: ok("{}")}
	g := newGateway(t, map[string]*fake{"a": a, "b": b}, route("m", "a", "b"))
	p, err := g.Plan("m")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Targets) != 2 || p.Targets[0].Key != "provider/a" || p.Targets[0].UpstreamModel != "a-m" || p.Targets[0].Skipped != "" || p.Strategy != "ordered" {
		t.Fatalf("plan = %+v", p)
	}
	for range 2 { // trip a's breaker (threshold 2)
		g.Do(context.Background(), &llm.Request{Model: "m"})
	}
	p, _ = g.Plan("m")
	if len(p.Targets) != 1 || p.Targets[0].Key != "provider/b" || len(p.Excluded) != 1 || p.Excluded[0].Key != "provider/a" ||
		p.Excluded[0].Reason != "breaker-open" || p.Excluded[0].Breaker != "open" {
		t.Fatalf("plan does not show the open breaker: %+v %+v", p.Targets, p.Excluded)
	}
	if a.calls != 2 {
		t.Fatalf("Plan sent requests: a called %d times", a.calls)
	}
	if _, err := g.Plan("nope"); llm.AsError(err).Status != 404 {
		t.Fatalf("unknown model: %v", err)
	}
}

// loadedFake is a fake that reports its own load, as the local engine does.
type loadedFake struct {
	*fake
	mu   sync.Mutex
	load provider.Load
}

func (l *loadedFake) Load() provider.Load { l.mu.Lock(); defer l.mu.Unlock(); return l.load }

func TestSelfReportingTarget(t *testing.T) {
	local := &loadedFake{fake: &fake{do: fail(429, true)}, load: provider.Load{Up: true, Running: 2, Capacity: 2}}
	cloud := &fake{do: ok("{}")}
	g := New(Config{
		NewProvider: func(p table.Provider) (provider.Provider, error) {
			if p.ID == "local" {
				return local, nil
			}
			return cloud, nil
		},
		BreakerThreshold: 2,
	})
	tab := &table.Table{
		Providers: []table.Provider{{ID: "local", Kind: table.KindLocal}, {ID: "cloud", Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1"}},
		Models:    []table.Model{{ID: "m"}, {ID: "only-local"}},
		Routes:    []*table.Route{route("m", "local", "cloud"), route("only-local", "local")},
	}
	if err := g.SetTable(tab); err != nil {
		t.Fatal(err)
	}
	// Full: passed by without an attempt, and the dry run says why.
	res, err := g.Do(context.Background(), &llm.Request{Model: "m"})
	if err != nil || local.calls != 0 || !strings.Contains(res.Route.Header(), "local(queue-full)") {
		t.Fatalf("route %q, err %v, local calls %d", res.Route.Header(), err, local.calls)
	}
	p, _ := g.Plan("m")
	if p.Targets[0].Skipped != "queue-full" || p.Targets[0].Load == nil || p.Targets[0].Load.Running != 2 {
		t.Fatalf("plan %+v", p.Targets[0])
	}
	// As the last target it is tried, and its refusals never open a
	// breaker: once it has room again, it is used at once.
	for range 5 {
		g.Do(context.Background(), &llm.Request{Model: "only-local"})
	}
	if local.calls != 5 {
		t.Fatalf("last target tried %d times, want 5", local.calls)
	}
	local.mu.Lock()
	local.load.Running = 0
	local.mu.Unlock()
	local.fake.do = ok("{}")
	res, err = g.Do(context.Background(), &llm.Request{Model: "m"})
	if err != nil || res.Route.Target != "local" || res.Route.Kind != "local" {
		t.Fatalf("a target with room again was passed by: %q %v", res.Route.Header(), err)
	}
	local.mu.Lock()
	local.load.Up = false
	local.mu.Unlock()
	// Down: not a candidate at all, and the dry run says why.
	if res, _ := g.Do(context.Background(), &llm.Request{Model: "m"}); res.Route.Target != "provider/cloud" {
		t.Fatalf("route %q", res.Route.Header())
	}
	if p, _ := g.Plan("m"); len(p.Excluded) != 1 || p.Excluded[0].Key != "local" || p.Excluded[0].Reason != "not-ready" {
		t.Fatalf("plan %+v", p.Excluded)
	}
}
