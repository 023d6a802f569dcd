package jobs

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/nats-io/nats-server/v2/server"
)

// tenants is a table of tenants for the webhook tests: auth gives each
// bearer token its tenant, and the deliverer reads policies from it.
type tenants struct {
	mu sync.Mutex
	m  map[string]*table.Tenant
}

func (ts *tenants) get(id string) *table.Tenant {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.m[id]
}

func (ts *tenants) auth(r *http.Request) (api.Identity, *llm.Error) {
	id, e := tenantAuth(r)
	if e == nil {
		id.Tenant = ts.get(id.TenantID)
	}
	return id, e
}

func newSecret(t *testing.T) (string, []byte) {
	key := make([]byte, 24)
	rand.Read(key)
	return "whsec_" + base64.StdEncoding.EncodeToString(key), key
}

// verify checks a call the way the Standard Webhooks spec says a
// receiver must, written from the spec rather than from Sign: the
// signed content is "<webhook-id>.<webhook-timestamp>.<body>", the key
// is the base64 part of the whsec_ secret, the header holds
// space-separated "v1,<base64 HMAC-SHA256>" signatures, and the
// timestamp must be within five minutes.
func verify(secret string, h http.Header, body []byte) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return fmt.Errorf("missing headers: id %q ts %q sig %q", id, ts, sigs)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q: %v", ts, err)
	}
	if d := time.Since(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %d is %s off", sec, d)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		v, b64, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("no valid signature in %q", sigs)
}

// receiver is a webhook endpoint that answers 500 to its first failN
// calls, then 200, and keeps every verified event by type.
type receiver struct {
	t      *testing.T
	secret string
	srv    *httptest.Server

	mu     sync.Mutex
	failN  int
	calls  int
	events map[string][]map[string]any // by type
	ids    map[string]string           // webhook-id by event type
	bad    []error
}

func newReceiver(t *testing.T, secret string, failN int) *receiver {
	rc := &receiver{t: t, secret: secret, failN: failN, events: map[string][]map[string]any{}, ids: map[string]string{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.calls++
		if err := verify(rc.secret, r.Header, body); err != nil {
			rc.bad = append(rc.bad, err)
			w.WriteHeader(400)
			return
		}
		if rc.calls <= rc.failN {
			w.WriteHeader(500)
			return
		}
		var ev map[string]any
		if err := json.Unmarshal(body, &ev); err != nil {
			rc.bad = append(rc.bad, err)
			return
		}
		typ, _ := ev["type"].(string)
		if ev["id"] != r.Header.Get("webhook-id") || ev["object"] != "event" {
			rc.bad = append(rc.bad, fmt.Errorf("event %s: id %v, header %s", body, ev["id"], r.Header.Get("webhook-id")))
		}
		rc.events[typ] = append(rc.events[typ], ev)
		rc.ids[typ] = r.Header.Get("webhook-id")
		w.WriteHeader(204)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// got returns the data.id of every event of typ received.
func (rc *receiver) got(typ string) []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.bad) > 0 {
		rc.t.Errorf("the receiver refused calls: %v", rc.bad)
	}
	var ids []string
	for _, ev := range rc.events[typ] {
		d, _ := ev["data"].(map[string]any)
		id, _ := d["id"].(string)
		ids = append(ids, id)
	}
	return ids
}

func (rc *receiver) callCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.calls
}

func hookEdge(t *testing.T, ns *server.Server, gw *fakeGateway, ts *tenants, tweak func(*Config)) *edge {
	return startEdge(t, ns, gw, func(c *Config) {
		c.Authenticate, c.Tenant = ts.auth, ts.get
		c.WebhookRetry.Base, c.WebhookRetry.Max = 50*time.Millisecond, 200*time.Millisecond
		if tweak != nil {
			tweak(c)
		}
	})
}

func (e *edge) createBatch(t *testing.T, tenant string, data []byte, extra string) (int, []byte) {
	t.Helper()
	code, body := e.upload(t, tenant, data)
	if code != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	f := decode[File](t, body)
	return e.do(t, tenant, "POST", "/v1/batches",
		strings.NewReader(fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":"24h"%s}`, f.ID, extra)), "application/json")
}

// TestWebhooksReachAFailingReceiver: a receiver that fails its first
// calls still gets every batch event, each signed, and an event
// survives the edge that emitted it stopping.
func TestWebhooksReachAFailingReceiver(t *testing.T) {
	ns := startBus(t)
	secret, _ := newSecret(t)
	rc := newReceiver(t, secret, 3)
	ts := &tenants{m: map[string]*table.Tenant{
		"acme": {ID: "acme", WebhookAllow: []string{"127.0.0.1/32"}, WebhookSecret: table.Secret(secret)},
	}}
	release := make(chan struct{})
	gw := &fakeGateway{block: func(body []byte) <-chan struct{} {
		if bytes.Contains(body, []byte("slow")) {
			return release
		}
		return nil
	}}
	defer close(release)
	e1 := hookEdge(t, ns, gw, ts, nil)
	hook := fmt.Sprintf(`,"webhook_url":%q`, rc.srv.URL+"/hooks")

	// completed: the edge that emitted the event stops before the
	// receiver accepts any call; another edge delivers it.
	code, body := e1.createBatch(t, "acme", jsonl(3, "m1"), hook)
	if code != 200 {
		t.Fatalf("create: %d %s", code, body)
	}
	done := decode[Batch](t, body)
	e1.await(t, "acme", done.ID, StatusCompleted)
	wait.For(t, 30*time.Second, "a first webhook call", func() error {
		if rc.callCount() == 0 {
			return fmt.Errorf("no call yet")
		}
		return nil
	})
	e1.svc.Close()
	e2 := hookEdge(t, ns, gw, ts, nil)

	// cancelled, through metadata rather than the extension field.
	var slow bytes.Buffer
	for i := range 3 {
		fmt.Fprintf(&slow, `{"custom_id":"s%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m1","messages":[{"role":"user","content":"slow"}]}}`+"\n", i)
	}
	code, body = e2.createBatch(t, "acme", slow.Bytes(), fmt.Sprintf(`,"metadata":{"webhook_url":%q}`, rc.srv.URL))
	if code != 200 {
		t.Fatalf("create: %d %s", code, body)
	}
	cancelled := decode[Batch](t, body)
	if code, body := e2.do(t, "acme", "POST", "/v1/batches/"+cancelled.ID+"/cancel", nil, ""); code != 200 {
		t.Fatalf("cancel: %d %s", code, body)
	}
	e2.await(t, "acme", cancelled.ID, StatusCancelled)

	// failed: a line for another endpoint.
	bad := []byte(`{"custom_id":"x","method":"POST","url":"/v1/embeddings","body":{"model":"m1","input":"x"}}` + "\n")
	code, body = e2.createBatch(t, "acme", bad, hook)
	failed := decode[Batch](t, body)
	if code != 200 || failed.Status != StatusFailed {
		t.Fatalf("create: %d %s", code, body)
	}

	want := map[string]string{"batch.completed": done.ID, "batch.cancelled": cancelled.ID, "batch.failed": failed.ID}
	wait.For(t, 60*time.Second, "every webhook event", func() error {
		for typ, id := range want {
			if got := rc.got(typ); len(got) != 1 || got[0] != id {
				return fmt.Errorf("%s: got %v, want [%s] (%d calls)", typ, got, id, rc.callCount())
			}
		}
		return nil
	})
	if n := rc.callCount(); n < len(want)+3 {
		t.Fatalf("%d calls: the first three must have failed and been retried", n)
	}
}

func TestWebhookExpiredEvent(t *testing.T) {
	ns := startBus(t)
	secret, _ := newSecret(t)
	rc := newReceiver(t, secret, 0)
	ts := &tenants{m: map[string]*table.Tenant{
		"acme": {ID: "acme", WebhookAllow: []string{"127.0.0.0/8"}, WebhookSecret: table.Secret(secret)},
	}}
	release := make(chan struct{})
	defer close(release)
	gw := &fakeGateway{block: func([]byte) <-chan struct{} { return release }}
	e := hookEdge(t, ns, gw, ts, nil)
	code, body := e.upload(t, "acme", jsonl(2, "m1"))
	f := decode[File](t, body)
	code, body = e.do(t, "acme", "POST", "/v1/batches", strings.NewReader(fmt.Sprintf(
		`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":"1s","webhook_url":%q}`, f.ID, rc.srv.URL)), "application/json")
	if code != 200 {
		t.Fatalf("create: %d %s", code, body)
	}
	b := decode[Batch](t, body)
	e.await(t, "acme", b.ID, StatusExpired)
	wait.For(t, 30*time.Second, "batch.expired", func() error {
		if got := rc.got("batch.expired"); len(got) != 1 || got[0] != b.ID {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
}

// TestWebhookRefusedAtSubmission: a callback outside the tenant's
// allow-list is refused with a 400 in OpenAI's error shape.
func TestWebhookRefusedAtSubmission(t *testing.T) {
	ns := startBus(t)
	secret, _ := newSecret(t)
	ts := &tenants{m: map[string]*table.Tenant{
		"acme":  {ID: "acme", WebhookAllow: []string{"hooks.example.com", "203.0.113.0/24"}, WebhookSecret: table.Secret(secret)},
		"plain": {ID: "plain"},
		"nosec": {ID: "nosec", WebhookAllow: []string{"hooks.example.com"}},
	}}
	e := hookEdge(t, ns, &fakeGateway{}, ts, nil)
	for _, c := range []struct{ tenant, extra string }{
		{"acme", `,"webhook_url":"http://10.0.0.1/hook"`},
		{"acme", `,"webhook_url":"http://169.254.169.254/latest"`},
		{"acme", `,"webhook_url":"http://127.0.0.1:8080/hook"`},
		{"acme", `,"webhook_url":"https://evil.example.net/hook"`},
		{"acme", `,"webhook_url":"file:///etc/passwd"`},
		{"acme", `,"metadata":{"webhook_url":"http://192.168.0.1/"}`},
		{"plain", `,"webhook_url":"https://hooks.example.com/"`},
		{"nosec", `,"webhook_url":"https://hooks.example.com/"`},
		{"nobody", `,"webhook_url":"https://hooks.example.com/"`},
	} {
		code, body := e.createBatch(t, c.tenant, jsonl(1, "m1"), c.extra)
		var er struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Param   *string `json:"param"`
				Code    *string `json:"code"`
			} `json:"error"`
		}
		if code != 400 || json.Unmarshal(body, &er) != nil || er.Error.Type != "invalid_request_error" ||
			er.Error.Param == nil || *er.Error.Param != "webhook_url" || er.Error.Message == "" {
			t.Errorf("%s %s: %d %s", c.tenant, c.extra, code, body)
		}
	}
	if code, body := e.createBatch(t, "acme", jsonl(1, "m1"), `,"webhook_url":"https://hooks.example.com/h"`); code != 200 {
		t.Fatalf("an allowed callback: %d %s", code, body)
	}
}

// TestWebhookDeadLetters: a host name the list allows that resolves to
// loopback is refused at connect time (no call is made), and a receiver
// that never accepts exhausts the retry window; both end as dead
// letters the owner can list.
func TestWebhookDeadLetters(t *testing.T) {
	ns := startBus(t)
	secret, _ := newSecret(t)
	rc := newReceiver(t, secret, 1<<30)
	ts := &tenants{m: map[string]*table.Tenant{
		"acme": {ID: "acme", WebhookAllow: []string{"localhost", "127.0.0.1/32"}, WebhookSecret: table.Secret(secret)},
		"beta": {ID: "beta", WebhookAllow: []string{"localhost"}, WebhookSecret: table.Secret(secret)},
	}}
	e := hookEdge(t, ns, &fakeGateway{}, ts, func(c *Config) { c.WebhookRetryFor = 2 * time.Second })
	port := rc.srv.URL[strings.LastIndex(rc.srv.URL, ":")+1:]
	code, body := e.createBatch(t, "beta", jsonl(1, "m1"), `,"webhook_url":"http://localhost:`+port+`/rebind"`)
	if code != 200 {
		t.Fatalf("create: %d %s", code, body)
	}
	rebind := decode[Batch](t, body)
	code, body = e.createBatch(t, "acme", jsonl(1, "m1"), fmt.Sprintf(`,"webhook_url":%q`, rc.srv.URL))
	if code != 200 {
		t.Fatalf("create: %d %s", code, body)
	}
	failing := decode[Batch](t, body)
	dead := func(tenant string) []DeadLetter {
		code, body := e.do(t, tenant, "GET", "/v1/meridian/webhooks/dead", nil, "")
		if code != 200 {
			t.Fatalf("dead letters: %d %s", code, body)
		}
		return decode[struct{ Data []DeadLetter }](t, body).Data
	}
	wait.For(t, 60*time.Second, "both dead letters", func() error {
		a, b := dead("acme"), dead("beta")
		if len(a) != 1 || len(b) != 1 {
			return fmt.Errorf("acme %+v, beta %+v", a, b)
		}
		return nil
	})
	a, b := dead("acme")[0], dead("beta")[0]
	if a.Subject != failing.ID || a.Type != "batch.completed" || a.Attempts < 2 || !strings.Contains(a.LastError, "500") {
		t.Fatalf("acme's dead letter: %+v", a)
	}
	if b.Subject != rebind.ID || !strings.Contains(b.LastError, "loopback") {
		t.Fatalf("beta's dead letter: %+v", b)
	}
	// The refused connection never reached the receiver: every call it
	// saw was acme's (each verified).
	if got := rc.got("batch.completed"); len(got) != 0 {
		t.Fatalf("the receiver accepted %v", got)
	}
	if len(dead("other")) != 0 {
		t.Fatal("another tenant sees the dead letters")
	}
}

// asyncEdge is hookEdge whose server also takes async requests on the
// two endpoints, as the node's handler does.
func asyncEdge(t *testing.T, ns *server.Server, gw *fakeGateway, ts *tenants) *edge {
	e := hookEdge(t, ns, gw, ts, nil)
	mux := http.NewServeMux()
	e.svc.Register(mux)
	for _, p := range AsyncPaths {
		mux.HandleFunc("POST "+p, func(w http.ResponseWriter, r *http.Request) {
			if !PrefersAsync(r) {
				w.WriteHeader(418)
				return
			}
			e.svc.SubmitAsync(w, r)
		})
	}
	e.srv.Config.Handler = mux
	return e
}

func TestAsyncRequests(t *testing.T) {
	ns := startBus(t)
	secret, _ := newSecret(t)
	rc := newReceiver(t, secret, 1)
	ts := &tenants{m: map[string]*table.Tenant{
		"acme": {ID: "acme", WebhookAllow: []string{"127.0.0.1/32"}, WebhookSecret: table.Secret(secret)},
	}}
	gw := &fakeGateway{}
	e := asyncEdge(t, ns, gw, ts)
	post := func(path, body string, hdr map[string]string) (*http.Response, []byte) {
		req, _ := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer acme")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Prefer", "respond-async, wait=0")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := post("/v1/chat/completions", `{"model":"m1","messages":[{"role":"user","content":"hi"}]}`,
		map[string]string{HeaderWebhookURL: rc.srv.URL + "/jobs"})
	if resp.StatusCode != 202 || resp.Header.Get("Preference-Applied") != "respond-async" {
		t.Fatalf("submit: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	chat := decode[Job](t, body)
	if !strings.HasPrefix(chat.ID, "job_") || chat.Status != StatusInProgress || resp.Header.Get("Location") != "/v1/meridian/jobs/"+chat.ID {
		t.Fatalf("job: %s, Location %q", body, resp.Header.Get("Location"))
	}
	resp, body = post("/v1/messages", `{"model":"m1","max_tokens":5,"messages":[{"role":"user","content":"yo"}]}`,
		map[string]string{"anthropic-version": "2023-06-01"})
	if resp.StatusCode != 202 {
		t.Fatalf("submit: %d %s", resp.StatusCode, body)
	}
	msg := decode[Job](t, body)
	awaitJob := func(id string) Job {
		var j Job
		wait.For(t, 60*time.Second, "job "+id, func() error {
			code, body := e.do(t, "acme", "GET", "/v1/meridian/jobs/"+id, nil, "")
			if code != 200 {
				return fmt.Errorf("%d %s", code, body)
			}
			if j = decode[Job](t, body); j.Status != JobCompleted {
				return fmt.Errorf("status %s", j.Status)
			}
			return nil
		})
		return j
	}
	if j := awaitJob(chat.ID); j.StatusCode == nil || *j.StatusCode != 200 || !bytes.Contains(j.Result, []byte("echo hi")) || j.CompletedAt == nil {
		t.Fatalf("chat job: %+v %s", j, j.Result)
	}
	if j := awaitJob(msg.ID); j.Endpoint != "/v1/messages" || !bytes.Contains(j.Result, []byte("echo yo")) {
		t.Fatalf("messages job: %+v %s", j, j.Result)
	}
	gw.mu.Lock()
	av := gw.hdr["Anthropic-Version"]
	gw.mu.Unlock()
	if av != "2023-06-01" {
		t.Fatalf("the /v1/messages job ran with anthropic-version %q", av)
	}
	wait.For(t, 30*time.Second, "job.completed", func() error {
		if got := rc.got("job.completed"); len(got) != 1 || got[0] != chat.ID {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
	// Another tenant cannot read it; a stream cannot be async; an
	// unknown job is 404 in OpenAI's shape.
	if code, _ := e.do(t, "other", "GET", "/v1/meridian/jobs/"+chat.ID, nil, ""); code != 404 {
		t.Fatalf("another tenant: %d", code)
	}
	if resp, body := post("/v1/chat/completions", `{"model":"m1","stream":true,"messages":[]}`, nil); resp.StatusCode != 400 || !bytes.Contains(body, []byte(`"param":"stream"`)) {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	if resp, body := post("/v1/messages", `{"model":""}`, map[string]string{"anthropic-version": "2023-06-01"}); resp.StatusCode != 400 || !bytes.Contains(body, []byte(`"type":"error"`)) {
		t.Fatalf("bad messages request: %d %s (want Anthropic's error shape)", resp.StatusCode, body)
	}
	if resp, body := post("/v1/chat/completions", `{"model":"m1","messages":[]}`, map[string]string{HeaderWebhookURL: "http://10.9.9.9/"}); resp.StatusCode != 400 {
		t.Fatalf("disallowed webhook: %d %s", resp.StatusCode, body)
	}
}
