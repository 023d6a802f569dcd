package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/api/anthropic"
	"github.com/meridian-mesh/meridian/edge/api/openai"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/limits"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/edge/usage"
	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/meridian-mesh/meridian/shared/usagewire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

// keysTable routes m to provider p (priced), with keys and a tenant.
func keysTable(keys []*table.Key, tenants []table.Tenant) *table.Table {
	return &table.Table{
		Revision:  7,
		Providers: []table.Provider{{ID: "p", Kind: table.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1"}},
		Models:    []table.Model{{ID: "m"}, {ID: "other"}},
		Routes: []*table.Route{{Model: "m", Targets: []table.Target{{Provider: "p", Model: "up-m"}}},
			{Model: "other", Targets: []table.Target{{Provider: "p"}}}},
		Prices:  []table.Price{{Provider: "p", Model: "up-m", Input: 3, Output: 15}},
		Keys:    keys,
		Tenants: tenants,
	}
}

// stream is an upstream stream of n chunks that reports usage at its
// end, or breaks after them with cut.
type stream struct {
	n, i int
	u    *llm.Usage
	cut  bool
}

func (s *stream) Next() (*llm.Chunk, error) {
	if s.i < s.n {
		s.i++
		return &llm.Chunk{Raw: []byte(`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"x"}}]}`)}, nil
	}
	if s.cut {
		return nil, llm.ErrStreamCut
	}
	return nil, io.EOF
}
func (s *stream) Usage() (llm.Usage, bool) {
	if s.u == nil || s.i < s.n || s.cut {
		return llm.Usage{}, false
	}
	return *s.u, true
}
func (s *stream) Close() error { return nil }

type keySurfaces struct {
	gw  *gateway.Gateway
	cfg api.Config
	mux *http.ServeMux
}

// newKeySurfaces serves both surfaces from t with cfg's extras; the
// upstream answers a plain completion with usage 10 in, 20 out, or a
// stream (streamed requests) of 3 chunks with the same usage.
func newKeySurfaces(t testing.TB, tab *table.Table, extra func(*api.Config)) *keySurfaces {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	gw := gateway.New(gateway.Config{Logger: quiet, NewProvider: func(p table.Provider) (provider.Provider, error) {
		return upstream{}, nil
	}})
	t.Cleanup(gw.Close)
	if err := gw.SetTable(tab); err != nil {
		t.Fatal(err)
	}
	s := &keySurfaces{gw: gw, cfg: api.Config{Gateway: gw, Logger: quiet, MaxBodyBytes: 8 << 20, Node: "edge-a", Region: "eu"}, mux: http.NewServeMux()}
	if extra != nil {
		extra(&s.cfg)
	}
	openai.New(s.cfg).Register(s.mux)
	anthropic.New(s.cfg).Register(s.mux)
	return s
}

type upstream struct{}

func (upstream) Do(_ context.Context, req *llm.Request, _ string) (*llm.Response, error) {
	u := &llm.Usage{PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30}
	if req.Stream {
		return &llm.Response{Stream: &stream{n: 3, u: u, cut: strings.Contains(string(req.Body), "cut-me")}}, nil
	}
	return &llm.Response{Body: []byte(`{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}`), Usage: *u}, nil
}
func (upstream) Close() {}

var reqSeq atomic.Int64

func (s *keySurfaces) post(path, key, body string) *httptest.ResponseRecorder {
	return s.postID(path, key, body, fmt.Sprintf("req-%d", reqSeq.Add(1)))
}

func (s *keySurfaces) postID(path, key, body, id string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	if path == messagesPath {
		r.Header.Set("Anthropic-Version", "2023-06-01")
	}
	r.Header.Set(api.HeaderRequestID, id)
	r = r.WithContext(gateway.WithClient(r.Context(), &gateway.Client{}))
	w := httptest.NewRecorder()
	s.mux.ServeHTTP(w, r)
	return w
}

const (
	chatPath, messagesPath = "/v1/chat/completions", "/v1/messages"
	chatM                  = `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	messagesM              = `{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`
)

func bodyOf(path, model string) string {
	if path == messagesPath {
		return strings.Replace(messagesM, `"m"`, `"`+model+`"`, 1)
	}
	return strings.Replace(chatM, `"m"`, `"`+model+`"`, 1)
}

// TestUnusableKeysAnswerLikeUnknown: an expired and a disabled key get
// exactly the answer an unknown key gets, on both surfaces, so nobody
// learns whether a key exists.
func TestUnusableKeysAnswerLikeUnknown(t *testing.T) {
	past := time.Now().Add(-time.Hour)
	s := newKeySurfaces(t, keysTable([]*table.Key{
		{ID: "good", Hash: keyHash("sk-good-0123456789")},
		{ID: "old", Hash: keyHash("sk-expired-0123456789"), ExpiresAt: past},
		{ID: "off", Hash: keyHash("sk-disabled-0123456789"), Disabled: true},
		{ID: "later", Hash: keyHash("sk-later-0123456789"), ExpiresAt: time.Now().Add(time.Hour)},
	}, nil), nil)
	for _, path := range []string{chatPath, messagesPath} {
		unknown := s.postID(path, "sk-unknown-0123456789", bodyOf(path, "m"), "req-same")
		if unknown.Code != http.StatusUnauthorized {
			t.Fatalf("%s unknown key: %d %s", path, unknown.Code, unknown.Body)
		}
		for _, key := range []string{"sk-expired-0123456789", "sk-disabled-0123456789"} {
			w := s.postID(path, key, bodyOf(path, "m"), "req-same")
			if w.Code != unknown.Code || w.Body.String() != unknown.Body.String() {
				t.Errorf("%s %s: %d %s; want exactly the unknown key's %d %s", path, key, w.Code, w.Body, unknown.Code, unknown.Body)
			}
		}
		for _, key := range []string{"sk-good-0123456789", "sk-later-0123456789"} {
			if w := s.post(path, key, bodyOf(path, "m")); w.Code != http.StatusOK {
				t.Errorf("%s %s: %d %s", path, key, w.Code, w.Body)
			}
		}
	}
}

func TestModelNotAllowed(t *testing.T) {
	s := newKeySurfaces(t, keysTable([]*table.Key{{ID: "k", Hash: keyHash(clientKey), AllowedModels: []string{"m"}}}, nil), nil)
	for _, path := range []string{chatPath, messagesPath} {
		if w := s.post(path, clientKey, bodyOf(path, "m")); w.Code != http.StatusOK {
			t.Fatalf("%s allowed model: %d %s", path, w.Code, w.Body)
		}
		w := s.post(path, clientKey, bodyOf(path, "other"))
		if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "may not use the model") {
			t.Fatalf("%s model not allowed: %d %s", path, w.Code, w.Body)
		}
		want := `"code":"model_not_allowed"`
		if path == messagesPath {
			want = `"type":"permission_error"`
		}
		if !strings.Contains(w.Body.String(), want) {
			t.Fatalf("%s: %s lacks %s", path, w.Body, want)
		}
	}
}

// TestBudgetExhausted: a tenant the control plane marked exhausted gets
// 429 insufficient_quota in each client's format until the period ends.
func TestBudgetExhausted(t *testing.T) {
	keys := []*table.Key{{ID: "k", Hash: keyHash(clientKey), Tenant: "acme"}}
	s := newKeySurfaces(t, keysTable(keys, []table.Tenant{{ID: "acme", Budget: 100, HardLimit: true, Exhausted: true, ExhaustedUntil: time.Now().Add(time.Hour)}}), nil)
	w := s.post(chatPath, clientKey, chatM)
	var oe struct {
		Error struct{ Type, Code, Message string }
	}
	json.Unmarshal(w.Body.Bytes(), &oe)
	if w.Code != http.StatusTooManyRequests || oe.Error.Type != "insufficient_quota" || oe.Error.Code != "insufficient_quota" || !strings.Contains(oe.Error.Message, "acme") {
		t.Fatalf("openai: %d %s", w.Code, w.Body)
	}
	w = s.post(messagesPath, clientKey, messagesM)
	var ae struct {
		Type  string
		Error struct{ Type, Message string }
	}
	json.Unmarshal(w.Body.Bytes(), &ae)
	if w.Code != http.StatusTooManyRequests || ae.Type != "error" || ae.Error.Type != "rate_limit_error" || !strings.Contains(ae.Error.Message, "quota") {
		t.Fatalf("anthropic: %d %s", w.Code, w.Body)
	}
	// Once the period is over, the flag no longer refuses.
	s2 := newKeySurfaces(t, keysTable(keys, []table.Tenant{{ID: "acme", Budget: 100, HardLimit: true, Exhausted: true, ExhaustedUntil: time.Now().Add(-time.Second)}}), nil)
	if w := s2.post(chatPath, clientKey, chatM); w.Code != http.StatusOK {
		t.Fatalf("after the period: %d %s", w.Code, w.Body)
	}
}

func newLimiter(t testing.TB) *limits.Limiter {
	t.Helper()
	c := limits.DefaultConfig()
	c.Node = "edge-a"
	l, err := limits.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestRateLimitHeaders: answers under a limit carry each format's
// rate-limit headers; the request over it gets 429 with Retry-After.
func TestRateLimitHeaders(t *testing.T) {
	for _, path := range []string{chatPath, messagesPath} {
		t.Run(strings.TrimPrefix(path, "/v1/"), func(t *testing.T) {
			lim := newLimiter(t)
			s := newKeySurfaces(t, keysTable([]*table.Key{{ID: "k", Hash: keyHash(clientKey), Tenant: "acme", RPM: 2}},
				[]table.Tenant{{ID: "acme", TPM: 1000}}), func(c *api.Config) { c.Limits = lim })
			prefix, reset := "X-Ratelimit-", "X-Ratelimit-Reset-Requests"
			names := []string{"X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Tokens"}
			if path == messagesPath {
				prefix, reset = "Anthropic-Ratelimit-", "Anthropic-Ratelimit-Requests-Reset"
				names = []string{"Anthropic-Ratelimit-Requests-Limit", "Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Tokens-Limit", "Anthropic-Ratelimit-Tokens-Remaining"}
			}
			for i, wantRemaining := range []string{"1", "0"} {
				w := s.post(path, clientKey, bodyOf(path, "m"))
				if w.Code != http.StatusOK {
					t.Fatalf("request %d: %d %s", i+1, w.Code, w.Body)
				}
				h := w.Header()
				if h.Get(names[0]) != "2" || h.Get(names[1]) != wantRemaining || h.Get(names[2]) != "1000" || h.Get(names[3]) == "" || h.Get(reset) == "" {
					t.Fatalf("request %d headers: %v", i+1, h)
				}
			}
			w := s.post(path, clientKey, bodyOf(path, "m"))
			h := w.Header()
			if w.Code != http.StatusTooManyRequests || h.Get("Retry-After") == "" || h.Get(names[1]) != "0" || !strings.Contains(w.Body.String(), "rate_limit") {
				t.Fatalf("over the limit: %d %v %s", w.Code, h, w.Body)
			}
			if path == messagesPath {
				if _, err := time.Parse(time.RFC3339, h.Get(reset)); err != nil {
					t.Fatalf("anthropic reset %q: %v", h.Get(reset), err)
				}
			} else if _, err := time.ParseDuration(h.Get(reset)); err != nil {
				t.Fatalf("openai reset %q: %v", h.Get(reset), err)
			}
			for k := range h {
				if strings.HasPrefix(k, "X-Ratelimit-") && prefix != "X-Ratelimit-" || strings.HasPrefix(k, "Anthropic-Ratelimit-") && prefix != "Anthropic-Ratelimit-" {
					t.Fatalf("%s answered with the other format's header %s", path, k)
				}
			}
			// The tenant's tokens count what the answers used (2 × 30),
			// not the prompt estimates.
			if _, toks := lim.Used(time.Now(), limits.Subject{Kind: limits.KindTenant, ID: "acme"}); toks != 60 {
				t.Fatalf("tenant used %d tokens, want 60", toks)
			}
		})
	}
}

// jsBus is an embedded NATS server with JetStream and the usage stream.
func jsBus(t *testing.T) (*nats.Conn, jetstream.Stream) {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: usagewire.Stream, Subjects: []string{usagewire.UsageSubjects}, Duplicates: usagewire.DuplicateWindow})
	if err != nil {
		t.Fatal(err)
	}
	return nc, st
}

// streamRecords waits for want records and returns them by request ID.
func streamRecords(t *testing.T, st jetstream.Stream, want int) map[string]*usagev1.Record {
	t.Helper()
	out := map[string]*usagev1.Record{}
	wait.For(t, 15*time.Second, fmt.Sprintf("%d usage records", want), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		if int(info.State.Msgs) != want {
			return fmt.Errorf("%d records", info.State.Msgs)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				return err
			}
			rec := &usagev1.Record{}
			if err := proto.Unmarshal(m.Data, rec); err != nil {
				return err
			}
			out[rec.RequestId] = rec
		}
		return nil
	})
	return out
}

// TestOneRecordPerRequest serves plain, streamed and broken streams on
// both surfaces, and requests refused before routing: each served
// request yields exactly one record with its tenant, tokens and cost.
func TestOneRecordPerRequest(t *testing.T) {
	nc, st := jsBus(t)
	uc := usage.DefaultConfig()
	reg := prometheus.NewRegistry()
	uc.Node, uc.Dir, uc.Registerer = "edge-a", t.TempDir(), reg
	rec, err := usage.New(uc)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	if err := rec.Start(nc); err != nil {
		t.Fatal(err)
	}
	s := newKeySurfaces(t, keysTable([]*table.Key{{ID: "k", Hash: keyHash(clientKey), Tenant: "acme"}}, []table.Tenant{{ID: "acme"}}),
		func(c *api.Config) { c.Usage = rec })
	streamed := func(b string) string { return strings.Replace(b, `"messages"`, `"stream":true,"messages"`, 1) }
	cut := func(b string) string { return strings.Replace(streamed(b), `"hi"`, `"cut-me"`, 1) }
	cases := []struct {
		path, body  string
		stream, cut bool
	}{
		{chatPath, chatM, false, false},
		{chatPath, streamed(chatM), true, false},
		{chatPath, cut(chatM), true, true},
		{messagesPath, messagesM, false, false},
		{messagesPath, streamed(messagesM), true, false},
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		w := s.post(c.path, clientKey, c.body)
		if w.Code != http.StatusOK {
			t.Fatalf("case %d: %d %s", i, w.Code, w.Body)
		}
		ids[i] = fmt.Sprintf("req-%d", reqSeq.Load())
	}
	// Refused before routing: no record.
	if w := s.post(chatPath, "sk-wrong-0123456789", chatM); w.Code != http.StatusUnauthorized {
		t.Fatalf("bad key: %d", w.Code)
	}
	got := streamRecords(t, st, len(cases))
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, c := range cases {
		r := got[ids[i]]
		if r == nil {
			t.Fatalf("case %d (%s): no record among %v", i, ids[i], keys)
		}
		wantOut := uint64(20)
		if c.cut {
			wantOut = 3 // no usage: a token per chunk sent
		}
		wantIn := uint64(10)
		if c.cut {
			wantIn = uint64(len(c.body) / 4)
		}
		if r.Tenant != "acme" || r.Key != "k" || r.Model != "m" || r.Target != "provider/p" || r.TargetKind != "provider" ||
			r.Node != "edge-a" || r.Region != "eu" || r.Via != "" || r.Status != 200 || r.Stream != c.stream || r.Interrupted != c.cut ||
			r.TokensIn != wantIn || r.TokensOut != wantOut || r.Revision != 7 || r.Schema != 1 || r.UnixMs == 0 {
			t.Errorf("case %d record: %v", i, r)
		}
		if want := usagewire.CostNanoUSD(wantIn, wantOut, table.Price{Input: 3, Output: 15}); r.CostNanoUsd != want || want == 0 {
			t.Errorf("case %d cost %d, want %d", i, r.CostNanoUsd, want)
		}
	}
	// /metrics: spend and tokens by tenant and model.
	var nanos, out int64
	for _, r := range got {
		nanos += r.CostNanoUsd
		out += int64(r.TokensOut)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "," + l.GetName() + "=" + l.GetValue()
			}
			values[name] = m.GetCounter().GetValue()
		}
	}
	if v := values["meridian_cost_usd_total,kind=provider,model=m,region=eu,tenant=acme"]; math.Abs(v-float64(nanos)/1e9) > 1e-12 {
		t.Errorf("cost metric %v, want %v (%v)", v, float64(nanos)/1e9, values)
	}
	if v := values["meridian_tenant_tokens_total,direction=out,kind=provider,model=m,region=eu,tenant=acme"]; v != float64(out) {
		t.Errorf("tokens metric %v, want %d (%v)", v, out, values)
	}
}
