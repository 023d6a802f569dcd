package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/jobswire"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startBus runs an embedded JetStream server with the batch streams.
func startBus(t *testing.T) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc := connect(t, ns)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := jobswire.Ensure(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	return ns
}

func connect(t *testing.T, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// fakeGateway answers every line with its body's model and a counter;
// block, when set, holds a line until it returns.
type fakeGateway struct {
	mu    sync.Mutex
	runs  map[string]int // by request ID
	hdr   map[string]string
	fail  func(body []byte, n int) int
	block func(body []byte) <-chan struct{}
}

func (g *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rid := r.Header.Get(api.HeaderRequestID)
	g.mu.Lock()
	if g.runs == nil {
		g.runs = map[string]int{}
	}
	g.runs[rid]++
	if v := r.Header.Get("Anthropic-Version"); v != "" {
		g.hdr = map[string]string{"Anthropic-Version": v}
	}
	n := g.runs[rid]
	fail, block := g.fail, g.block
	g.mu.Unlock()
	if block != nil {
		if ch := block(body); ch != nil {
			select {
			case <-ch:
			case <-r.Context().Done():
				w.WriteHeader(499)
				return
			}
		}
	}
	w.Header().Set(api.HeaderRequestID, rid)
	if fail != nil {
		if code := fail(body, n); code != 0 {
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"error":{"message":"failed on purpose","type":"server_error","param":null,"code":null}}`)
			return
		}
	}
	var req struct {
		Messages []struct{ Content string } `json:"messages"`
	}
	json.Unmarshal(body, &req)
	echo := ""
	if len(req.Messages) > 0 {
		echo = req.Messages[0].Content
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}]}`, "echo "+echo)
}

func (g *fakeGateway) ran() (lines, total int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, n := range g.runs {
		lines++
		total += n
	}
	return lines, total
}

// tenantAuth takes the bearer token as the tenant's name.
func tenantAuth(r *http.Request) (api.Identity, *llm.Error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return api.Identity{}, &llm.Error{Status: 401, Type: llm.TypeAuthentication, Code: "invalid_api_key", Message: "Incorrect API key provided."}
	}
	return api.Identity{KeyID: "k-" + tok, TenantID: tok}, nil
}

type edge struct {
	svc *Service
	nc  *nats.Conn
	srv *httptest.Server
	gw  *fakeGateway
}

func startEdge(t *testing.T, ns *server.Server, gw *fakeGateway, tweak func(*Config)) *edge {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Run, cfg.Authenticate, cfg.Workers, cfg.AckWait, cfg.Poll = gw, tenantAuth, 4, 2*time.Second, 50*time.Millisecond
	cfg.Retry.Base, cfg.Retry.Max = 50*time.Millisecond, 200*time.Millisecond
	if tweak != nil {
		tweak(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nc := connect(t, ns)
	if err := svc.Start(nc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	select {
	case <-svc.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("jobs service never bound to the streams")
	}
	mux := http.NewServeMux()
	svc.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &edge{svc: svc, nc: nc, srv: srv, gw: gw}
}

func (e *edge) do(t *testing.T, tenant, method, path string, body io.Reader, ctype string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, body)
	if tenant != "" {
		req.Header.Set("Authorization", "Bearer "+tenant)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (e *edge) upload(t *testing.T, tenant string, data []byte) (int, []byte) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	fw.Write(data)
	mw.Close()
	return e.do(t, tenant, "POST", "/v1/files", &buf, mw.FormDataContentType())
}

func jsonl(n int, model string) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"custom_id":"req-%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"line %d"}]}}`+"\n", i, model, i)
	}
	return b.Bytes()
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

// submit uploads data and creates a batch for tenant.
func (e *edge) submit(t *testing.T, tenant string, data []byte, window string) Batch {
	t.Helper()
	code, body := e.upload(t, tenant, data)
	if code != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	f := decode[File](t, body)
	code, body = e.do(t, tenant, "POST", "/v1/batches",
		strings.NewReader(fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":%q}`, f.ID, window)), "application/json")
	if code != 200 {
		t.Fatalf("create batch: %d %s", code, body)
	}
	return decode[Batch](t, body)
}

func (e *edge) await(t *testing.T, tenant, id string, statuses ...string) Batch {
	t.Helper()
	var b Batch
	wait.For(t, 60*time.Second, "batch "+id+" to reach "+strings.Join(statuses, "/"), func() error {
		code, body := e.do(t, tenant, "GET", "/v1/batches/"+id, nil, "")
		if code != 200 {
			return fmt.Errorf("GET: %d %s", code, body)
		}
		b = decode[Batch](t, body)
		for _, s := range statuses {
			if b.Status == s {
				return nil
			}
		}
		return fmt.Errorf("status %s, counts %+v", b.Status, b.RequestCounts)
	})
	return b
}

// outputs reads a file's JSONL lines by custom_id, failing on a
// duplicate.
func (e *edge) outputs(t *testing.T, tenant string, fid *string) map[string]OutputLine {
	t.Helper()
	out := map[string]OutputLine{}
	if fid == nil {
		return out
	}
	code, body := e.do(t, tenant, "GET", "/v1/files/"+*fid+"/content", nil, "")
	if code != 200 {
		t.Fatalf("content: %d %s", code, body)
	}
	for _, l := range bytes.Split(bytes.TrimSpace(body), []byte("\n")) {
		ol := decode[OutputLine](t, l)
		if _, dup := out[ol.CustomID]; dup {
			t.Fatalf("custom_id %s is in the file twice", ol.CustomID)
		}
		out[ol.CustomID] = ol
	}
	return out
}

func TestBatchRunsEveryLineOnce(t *testing.T) {
	ns := startBus(t)
	gw := &fakeGateway{fail: func(body []byte, n int) int {
		if bytes.Contains(body, []byte(`"line 7"`)) {
			return 400 // a client error: failed, not retried
		}
		if bytes.Contains(body, []byte(`"line 9"`)) && n == 1 {
			return 503 // retried, then succeeds
		}
		return 0
	}}
	e := startEdge(t, ns, gw, nil)
	const n = 200
	b := e.submit(t, "acme", jsonl(n, "m1"), "24h")
	if b.Status != StatusInProgress || b.RequestCounts.Total != n || b.Object != "batch" {
		t.Fatalf("created batch: %+v", b)
	}
	b = e.await(t, "acme", b.ID, StatusCompleted)
	if b.RequestCounts != (Counts{Total: n, Completed: n - 1, Failed: 1}) {
		t.Fatalf("request_counts %+v", b.RequestCounts)
	}
	out, errs := e.outputs(t, "acme", b.OutputFileID), e.outputs(t, "acme", b.ErrorFileID)
	if len(out) != n-1 || len(errs) != 1 {
		t.Fatalf("%d output lines and %d error lines", len(out), len(errs))
	}
	ol := out["req-3"]
	if ol.Response == nil || ol.Response.StatusCode != 200 || ol.Error != nil || !strings.HasPrefix(ol.ID, "batch_req_") ||
		!bytes.Contains(ol.Response.Body, []byte("echo line 3")) || ol.Response.RequestID == "" {
		t.Fatalf("output line: %+v", ol)
	}
	if el := errs["req-7"]; el.Response == nil || el.Response.StatusCode != 400 {
		t.Fatalf("error line: %+v", el)
	}
	if r9 := out["req-9"]; r9.Response == nil || r9.Response.StatusCode != 200 {
		t.Fatalf("retried line: %+v", r9)
	}
	if lines, _ := gw.ran(); lines != n {
		t.Fatalf("the gateway saw %d distinct lines, want %d", lines, n)
	}
	// The output file is the caller's, and listed as batch_output.
	code, body := e.do(t, "acme", "GET", "/v1/files/"+*b.OutputFileID, nil, "")
	if f := decode[File](t, body); code != 200 || f.Purpose != "batch_output" {
		t.Fatalf("output file: %d %s", code, body)
	}
}

func TestOtherTenantGets404(t *testing.T) {
	ns := startBus(t)
	e := startEdge(t, ns, &fakeGateway{}, nil)
	b := e.submit(t, "acme", jsonl(3, "m1"), "24h")
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/files/" + b.InputFileID}, {"GET", "/v1/files/" + b.InputFileID + "/content"},
		{"DELETE", "/v1/files/" + b.InputFileID}, {"GET", "/v1/batches/" + b.ID}, {"POST", "/v1/batches/" + b.ID + "/cancel"},
	} {
		code, body := e.do(t, "globex", c.method, c.path, nil, "")
		if code != 404 || !bytes.Contains(body, []byte(`"invalid_request_error"`)) {
			t.Errorf("%s %s as another tenant: %d %s", c.method, c.path, code, body)
		}
	}
	code, body := e.do(t, "globex", "POST", "/v1/batches",
		strings.NewReader(fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":"24h"}`, b.InputFileID)), "application/json")
	if code != 404 {
		t.Errorf("a batch on another tenant's file: %d %s", code, body)
	}
	code, body = e.do(t, "globex", "GET", "/v1/batches", nil, "")
	if l := decode[struct{ Data []Batch }](t, body); code != 200 || len(l.Data) != 0 {
		t.Errorf("another tenant's list: %d %s", code, body)
	}
	for _, bad := range []string{"batch_*", "batch_zz", "x", "batch_" + strings.Repeat("a", 65), "batch_%3E"} {
		if code, body := e.do(t, "acme", "GET", "/v1/batches/"+bad, nil, ""); code != 404 {
			t.Errorf("batch ID %q: %d %s", bad, code, body)
		}
	}
	if code, _ := e.do(t, "", "GET", "/v1/batches/"+b.ID, nil, ""); code != 401 {
		t.Errorf("no key: %d", code)
	}
	e.await(t, "acme", b.ID, StatusCompleted)
	if code, body := e.do(t, "acme", "DELETE", "/v1/files/"+b.InputFileID, nil, ""); code != 200 || !bytes.Contains(body, []byte(`"deleted":true`)) {
		t.Errorf("delete: %d %s", code, body)
	}
	if code, _ := e.do(t, "acme", "GET", "/v1/files/"+b.InputFileID, nil, ""); code != 404 {
		t.Errorf("a deleted file: %d", code)
	}
}

func TestUploadRefusesBadFiles(t *testing.T) {
	ns := startBus(t)
	e := startEdge(t, ns, &fakeGateway{}, func(c *Config) { c.MaxFileBytes = 4096 })
	good := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`
	for name, c := range map[string]struct {
		data, want string
		code       int
	}{
		"not json":     {good + "\n{nope\n", "Line 2", 400},
		"no custom_id": {`{"method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`, "custom_id", 400},
		"dup id":       {good + "\n" + good, "used on line 1", 400},
		"bad url":      {strings.Replace(good, "/v1/chat/completions", "/v1/images", 1), "url must be", 400},
		"stream":       {strings.Replace(good, `"model":"m"`, `"model":"m","stream":true`, 1), "cannot stream", 400},
		"empty":        {"\n\n", "no requests", 400},
		"too large":    {strings.Repeat(good+"\n", 100), "larger than", 413},
	} {
		code, body := e.upload(t, "acme", []byte(c.data))
		if code != c.code || !bytes.Contains(body, []byte(c.want)) || !bytes.Contains(body, []byte(`"error"`)) {
			t.Errorf("%s: %d %s", name, code, body)
		}
	}
	code, body := e.do(t, "acme", "POST", "/v1/files", strings.NewReader("{}"), "application/json")
	if code != 400 || !bytes.Contains(body, []byte("multipart")) {
		t.Errorf("json upload: %d %s", code, body)
	}
	code, body = e.do(t, "acme", "POST", "/v1/batches", strings.NewReader(`{"input_file_id":"file-x","endpoint":"/v1/chat/completions","completion_window":"forever"}`), "application/json")
	if code != 400 || !bytes.Contains(body, []byte("completion_window")) {
		t.Errorf("bad window: %d %s", code, body)
	}
}

// TestKilledWorkerLosesNothing kills one edge's bus connection while it
// holds lines; JetStream redelivers them to the other edge after
// AckWait, and every line is in the output exactly once.
func TestKilledWorkerLosesNothing(t *testing.T) {
	ns := startBus(t)
	release := make(chan struct{})
	var held atomic.Int32
	victim := &fakeGateway{block: func([]byte) <-chan struct{} {
		held.Add(1)
		return release
	}}
	a := startEdge(t, ns, victim, nil)
	const n = 100
	b := a.submit(t, "acme", jsonl(n, "m1"), "24h")
	wait.For(t, 20*time.Second, "the victim to hold lines", func() error {
		if h := held.Load(); h < 2 {
			return fmt.Errorf("holding %d", h)
		}
		return nil
	})
	a.nc.Close() // dies mid-line: nothing stored, nothing acknowledged
	survivor := &fakeGateway{}
	s := startEdge(t, ns, survivor, nil)
	close(release) // the victim's lines finish, but it can store nothing
	done := s.await(t, "acme", b.ID, StatusCompleted)
	if done.RequestCounts != (Counts{Total: n, Completed: n}) {
		t.Fatalf("request_counts %+v", done.RequestCounts)
	}
	out := s.outputs(t, "acme", done.OutputFileID)
	for i := range n {
		if ol, ok := out[fmt.Sprintf("req-%d", i)]; !ok || ol.Response.StatusCode != 200 {
			t.Fatalf("req-%d: %+v", i, ol)
		}
	}
	if len(out) != n {
		t.Fatalf("%d lines in the output, want %d", len(out), n)
	}
	// A line run twice ran under one request ID both times, so its usage
	// records are one record to the control plane.
	victim.mu.Lock()
	survivor.mu.Lock()
	defer victim.mu.Unlock()
	defer survivor.mu.Unlock()
	for rid := range victim.runs {
		if out[customOf(t, out, rid)].Response.RequestID != rid || survivor.runs[rid] != 1 {
			t.Errorf("line %s: the survivor ran it %d times under the same request ID", rid, survivor.runs[rid])
		}
	}
}

// customOf returns the custom_id whose output line carries request ID rid.
func customOf(t *testing.T, out map[string]OutputLine, rid string) string {
	t.Helper()
	for id, ol := range out {
		if ol.Response != nil && ol.Response.RequestID == rid {
			return id
		}
	}
	t.Fatalf("no output line has request ID %s", rid)
	return ""
}

func TestCancelMidBatch(t *testing.T) {
	ns := startBus(t)
	gate := make(chan struct{})
	gw := &fakeGateway{block: func(body []byte) <-chan struct{} {
		if bytes.Contains(body, []byte(`"line 0"`)) || bytes.Contains(body, []byte(`"line 1"`)) {
			return nil
		}
		return gate
	}}
	e := startEdge(t, ns, gw, func(c *Config) { c.Workers = 1 })
	b := e.submit(t, "acme", jsonl(50, "m1"), "24h")
	wait.For(t, 20*time.Second, "two lines done", func() error {
		code, body := e.do(t, "acme", "GET", "/v1/batches/"+b.ID, nil, "")
		if c := decode[Batch](t, body).RequestCounts; code != 200 || c.Completed < 2 {
			return fmt.Errorf("%d %+v", code, c)
		}
		return nil
	})
	code, body := e.do(t, "acme", "POST", "/v1/batches/"+b.ID+"/cancel", nil, "")
	if code != 200 {
		t.Fatalf("cancel: %d %s", code, body)
	}
	close(gate)
	got := e.await(t, "acme", b.ID, StatusCancelled)
	if got.CancelledAt == nil || got.CancellingAt == nil || got.RequestCounts.Completed < 2 || got.RequestCounts.Completed > 3 {
		t.Fatalf("cancelled batch: %+v", got)
	}
	// The queued lines were purged before cancel answered: the gateway
	// saw only the two done and the one held.
	if lines, _ := gw.ran(); lines > 3 {
		t.Fatalf("%d lines ran after a cancel at 2", lines)
	}
	if code, _ := e.do(t, "acme", "POST", "/v1/batches/"+b.ID+"/cancel", nil, ""); code != 409 {
		t.Fatalf("cancelling twice: %d", code)
	}
}

func TestExpiredBatchListsUnrunLines(t *testing.T) {
	ns := startBus(t)
	gate := make(chan struct{})
	defer close(gate)
	gw := &fakeGateway{block: func(body []byte) <-chan struct{} {
		if bytes.Contains(body, []byte(`"line 0"`)) {
			return nil
		}
		return gate
	}}
	var skew atomic.Int64 // how far the batch's clock runs ahead
	e := startEdge(t, ns, gw, func(c *Config) {
		c.Workers = 1
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	b := e.submit(t, "acme", jsonl(5, "m1"), "1h")
	wait.For(t, 20*time.Second, "line 0 done", func() error {
		code, body := e.do(t, "acme", "GET", "/v1/batches/"+b.ID, nil, "")
		if c := decode[Batch](t, body).RequestCounts; code != 200 || c.Completed != 1 {
			return fmt.Errorf("%d %+v", code, c)
		}
		return nil
	})
	skew.Store(int64(2 * time.Hour))
	got := e.await(t, "acme", b.ID, StatusExpired)
	errs := e.outputs(t, "acme", got.ErrorFileID)
	out := e.outputs(t, "acme", got.OutputFileID)
	if len(out) != 1 || len(errs) != 4 || got.ExpiredAt == nil || got.RequestCounts != (Counts{Total: 5, Completed: 1}) {
		t.Fatalf("%d output and %d error lines; %+v", len(out), len(errs), got)
	}
	if el := errs["req-4"]; el.Error == nil || el.Error.Code != "batch_expired" || el.Response != nil {
		t.Fatalf("expired line: %+v", el)
	}
}

func TestBusyEdgeYields(t *testing.T) {
	ns := startBus(t)
	var busy atomic.Bool
	busy.Store(true)
	gw := &fakeGateway{}
	var asked atomic.Value
	e := startEdge(t, ns, gw, func(c *Config) {
		c.Busy = func(model string) bool { asked.Store(model); return busy.Load() }
	})
	b := e.submit(t, "acme", jsonl(5, "m1"), "24h")
	// While busy, nothing runs; there is no event to wait for, so give
	// the workers many polls' worth of chances.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if lines, _ := gw.ran(); lines != 0 {
			t.Fatalf("%d lines ran while the engine was busy", lines)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m, _ := asked.Load().(string); m != "m1" {
		t.Fatalf("busy was asked about %q, want the line's model", m)
	}
	busy.Store(false)
	e.await(t, "acme", b.ID, StatusCompleted)
}

func TestListBatchesPages(t *testing.T) {
	ns := startBus(t)
	e := startEdge(t, ns, &fakeGateway{}, nil)
	var ids []string
	for range 5 {
		ids = append(ids, e.submit(t, "acme", jsonl(1, "m1"), "24h").ID)
	}
	type list struct {
		Data    []Batch
		HasMore bool   `json:"has_more"`
		LastID  string `json:"last_id"`
	}
	_, body := e.do(t, "acme", "GET", "/v1/batches?limit=2", nil, "")
	l := decode[list](t, body)
	if len(l.Data) != 2 || !l.HasMore || l.Data[0].ID != ids[4] || l.Data[1].ID != ids[3] {
		t.Fatalf("first page: %s", body)
	}
	_, body = e.do(t, "acme", "GET", "/v1/batches?limit=10&after="+l.LastID, nil, "")
	l = decode[list](t, body)
	if len(l.Data) != 3 || l.HasMore || l.Data[0].ID != ids[2] || l.Data[2].ID != ids[0] {
		t.Fatalf("second page: %s", body)
	}
	if code, _ := e.do(t, "acme", "GET", "/v1/batches?limit=0", nil, ""); code != 400 {
		t.Fatalf("limit=0: %d", code)
	}
}

func TestLocalModelsFirst(t *testing.T) {
	l := &lanes{all: map[string]*lane{
		"a": {model: "far", pending: 3}, "b": {model: "near", pending: 1},
	}, wake: make(chan struct{}), local: func() []string { return []string{"near"} }}
	for range 4 {
		if ln, _ := l.pick(); ln.model != "near" {
			t.Fatalf("picked %s while a local model has lines", ln.model)
		}
	}
	l.drained(l.all["b"])
	if ln, _ := l.pick(); ln == nil || ln.model != "far" {
		t.Fatalf("picked %v once the local model ran dry", ln)
	}
}

func TestUnboundServiceAnswers503(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Run, cfg.Authenticate = &fakeGateway{}, tenantAuth
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	svc.Register(mux)
	rw := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/v1/batches", nil)
	req.Header.Set("Authorization", "Bearer acme")
	mux.ServeHTTP(rw, req)
	if rw.Code != 503 || !strings.Contains(rw.Body.String(), "batches_unavailable") {
		t.Fatalf("%d %s", rw.Code, rw.Body)
	}
}

func TestListFiles(t *testing.T) {
	ns := startBus(t)
	e := startEdge(t, ns, &fakeGateway{}, nil)
	var ids []string
	for range 4 {
		code, body := e.upload(t, "acme", jsonl(1, "m1"))
		if code != 200 {
			t.Fatalf("upload: %d %s", code, body)
		}
		ids = append(ids, decode[File](t, body).ID)
	}
	e.upload(t, "other", jsonl(1, "m1"))
	b := e.submit(t, "acme", jsonl(2, "m1"), "24h") // a fifth input file, and an output file
	b = e.await(t, "acme", b.ID, StatusCompleted)
	ids = append(ids, b.InputFileID)
	type list struct {
		Object  string
		Data    []File
		HasMore bool   `json:"has_more"`
		FirstID string `json:"first_id"`
		LastID  string `json:"last_id"`
	}
	get := func(q string) list {
		code, body := e.do(t, "acme", "GET", "/v1/files"+q, nil, "")
		if code != 200 {
			t.Fatalf("list %s: %d %s", q, code, body)
		}
		return decode[list](t, body)
	}
	l := get("?purpose=batch&limit=2")
	if l.Object != "list" || len(l.Data) != 2 || !l.HasMore || l.Data[0].ID != ids[4] || l.Data[1].ID != ids[3] || l.FirstID != ids[4] {
		t.Fatalf("first page: %+v", l)
	}
	l = get("?purpose=batch&after=" + l.LastID)
	if len(l.Data) != 3 || l.HasMore || l.Data[0].ID != ids[2] || l.Data[2].ID != ids[0] {
		t.Fatalf("second page: %+v", l)
	}
	if l = get("?purpose=batch_output"); len(l.Data) != 1 || l.Data[0].ID != *b.OutputFileID {
		t.Fatalf("outputs: %+v", l)
	}
	if l = get(""); len(l.Data) != 6 {
		t.Fatalf("every file of acme: %+v", l)
	}
	if l = get("?order=asc&limit=1"); len(l.Data) != 1 || l.Data[0].ID != ids[0] {
		t.Fatalf("oldest first: %+v", l)
	}
	if code, _ := e.do(t, "acme", "GET", "/v1/files?limit=0", nil, ""); code != 400 {
		t.Fatalf("limit=0: %d", code)
	}
	if code, body := e.do(t, "nobody", "GET", "/v1/files", nil, ""); code != 200 || decode[list](t, body).Data == nil || len(decode[list](t, body).Data) != 0 {
		t.Fatalf("a tenant without files: %d %s", code, body)
	}
}

// TestInteractiveArrivalPreemptsALine: a running line whose capacity an
// interactive request wants is cancelled at once and runs again later,
// more often than MaxDeliver allows deliveries, without counting as a
// failure.
func TestInteractiveArrivalPreemptsALine(t *testing.T) {
	ns := startBus(t)
	var want atomic.Int64 // interactive requests waiting
	release := make(chan struct{})
	var cancelled atomic.Int64
	gw := &fakeGateway{block: func(body []byte) <-chan struct{} {
		if want.Load() > 0 {
			return release // held until preempted (the context ends)
		}
		return nil
	}}
	wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gw.ServeHTTP(w, r)
		if r.Context().Err() != nil {
			cancelled.Add(1)
		}
	})
	e := startEdge(t, ns, gw, func(c *Config) {
		c.Run = wrapped
		c.MaxDeliver = 2
		c.Workers = 1
		c.Preempt = func(string) bool { return want.Load() > 0 && cancelled.Load() < 5 }
		c.Busy = func(string) bool { return cancelled.Load() >= 5 && want.Load() > 0 }
	})
	want.Store(1)
	b := e.submit(t, "acme", jsonl(3, "m1"), "24h")
	wait.For(t, 30*time.Second, "five preemptions", func() error {
		if n := e.svc.Preempted(); n < 5 {
			return fmt.Errorf("%d preempted, %d cancelled", n, cancelled.Load())
		}
		return nil
	})
	want.Store(0) // the interactive requests are served
	b = e.await(t, "acme", b.ID, StatusCompleted)
	if b.RequestCounts != (Counts{Total: 3, Completed: 3}) {
		t.Fatalf("counts %+v: a preempted line counted as failed", b.RequestCounts)
	}
	for id, l := range e.outputs(t, "acme", b.OutputFileID) {
		if l.Response == nil || l.Response.StatusCode != 200 {
			t.Fatalf("%s: %+v", id, l)
		}
	}
}
