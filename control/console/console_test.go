package console_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/console"
	"github.com/meridian-mesh/meridian/control/controltest"
)

// fixture is one control node serving the console, with a small fleet
// and a fake edge answering the explorer's dry runs.
type fixture struct {
	m *controltest.Member
	// edgeQueries are the dry-run queries the fake edge received.
	mu          sync.Mutex
	edgeQueries []url.Values
}

// plan is what the fake edge answers: one provider candidate and one
// exclusion, in edge/gateway.Explanation's JSON.
const plan = `{"model":"tiny","table_revision":7,"strategy":"nearest",
 "targets":[{"kind":"peer","target":"peer/edge-a","id":"edge-a","upstream_model":"tiny","region":"eu-west","score":412.5}],
 "excluded":[{"kind":"provider","target":"provider/mock-us","id":"mock-us","upstream_model":"tiny","region":"us-east","score":0,"reason":"region-not-allowed"}],
 "allowed_regions":["eu-west"]}`

func start(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{}
	edge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/meridian/route" {
			http.NotFound(w, r)
			return
		}
		f.mu.Lock()
		f.edgeQueries = append(f.edgeQueries, r.URL.Query())
		f.mu.Unlock()
		if r.URL.Query().Get("model") == "nope" {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"message":"The model 'nope' does not exist","type":"invalid_request_error","param":"model","code":"model_not_found"}}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, plan)
	}))
	t.Cleanup(edge.Close)
	c := controltest.Start(t, 1, controltest.Options{Distribution: true, Console: true,
		ConsoleEdges: []console.Edge{{ID: "edge-a", URL: edge.URL}}})
	f.m = c.Leader()
	for _, e := range []struct{ kind, id, body string }{
		{"regions", "eu-west", `{"id":"eu-west","name":"Dublin","latitude":53.35,"longitude":-6.26}`},
		{"regions", "us-east", `{"id":"us-east","name":"Virginia","latitude":38.9,"longitude":-77.4}`},
		{"nodes", "edge-a", `{"id":"edge-a","region":"eu-west"}`},
		{"nodes", "edge-b", `{"id":"edge-b","region":"us-east"}`},
		{"models", "tiny", `{"id":"tiny","local":true,"gguf":"file:///models/tiny.gguf"}`},
		{"placements", "tiny-eu", `{"id":"tiny-eu","model":"tiny","region":"eu-west","desired":1}`},
		{"tenants", "open", `{"id":"open"}`},
		{"keys", "key-open", `{"id":"key-open","tenant":"open","hash":"sha256:` + strings.Repeat("ab", 32) + `"}`},
	} {
		f.api(t, http.MethodPut, "/v1/control/"+e.kind+"/"+e.id, e.body, http.StatusOK)
	}
	return f
}

// api calls the management API directly with the admin token.
func (f *fixture) api(t *testing.T, method, path, body string, want int) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	code, b, _, err := f.m.Do(ctx, method, path, controltest.AdminToken, rd, "Content-Type", "application/json")
	if err != nil || code != want {
		t.Fatalf("%s %s: %d %s (%v), want %d", method, path, code, b, err, want)
	}
	return b
}

// browser is a client with a session cookie that never follows
// redirects, so tests see them.
type browser struct {
	t      *testing.T
	base   string
	cookie *http.Cookie
}

func (f *fixture) browser(t *testing.T) *browser { return &browser{t: t, base: f.m.URL} }

type page struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(method, path string, form url.Values, hdr ...string) page {
	b.t.Helper()
	var rd io.Reader
	if form != nil {
		rd = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if b.cookie != nil {
		req.AddCookie(b.cookie)
	}
	cl := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, c := range resp.Cookies() {
		if c.Name == "meridian_console" {
			b.cookie = c
		}
	}
	return page{resp.StatusCode, resp.Header, string(body)}
}

func (b *browser) login(token string) page {
	b.t.Helper()
	return b.do(http.MethodPost, "/ui/login", url.Values{"token": {token}})
}

func TestNoTokenGoesToLogin(t *testing.T) {
	f := start(t)
	b := f.browser(t)
	for _, path := range []string{"/ui/", "/ui/keys", "/ui/placements", "/ui/spend", "/ui/routes", "/ui/explain"} {
		p := b.do(http.MethodGet, path, nil)
		if p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/ui/login") {
			t.Errorf("GET %s without a session: %d to %q, want 303 to the login page", path, p.status, p.header.Get("Location"))
		}
	}
	// htmx follows HX-Redirect rather than a 303 it would fetch.
	p := b.do(http.MethodPost, "/ui/keys", url.Values{"id": {"sneaky"}}, "HX-Request", "true")
	if p.status != http.StatusUnauthorized || p.header.Get("HX-Redirect") != "/ui/login" {
		t.Errorf("htmx POST without a session: %d, HX-Redirect %q", p.status, p.header.Get("HX-Redirect"))
	}
	// A made-up cookie is no session, nor is the raw token (the cookie
	// carries it encoded).
	for _, v := range []string{base64.RawURLEncoding.EncodeToString([]byte("not-a-token-of-this-cluster")), controltest.AdminToken, "%%%"} {
		b.cookie = &http.Cookie{Name: "meridian_console", Value: v}
		if p := b.do(http.MethodGet, "/ui/", nil); p.status != http.StatusSeeOther {
			t.Errorf("GET /ui/ with cookie %q: %d, want 303", v, p.status)
		}
	}
	login := b.do(http.MethodGet, "/ui/login", nil)
	if login.status != http.StatusOK || !strings.Contains(login.body, `name="token"`) {
		t.Fatalf("login page: %d %s", login.status, login.body)
	}
	f.api(t, http.MethodGet, "/v1/control/keys/sneaky", "", http.StatusNotFound)
}

func TestLogin(t *testing.T) {
	f := start(t)
	b := f.browser(t)
	if p := b.login("wrong-token-0123456789"); p.status != http.StatusUnauthorized || b.cookie != nil {
		t.Fatalf("login with a wrong token: %d, cookie %v", p.status, b.cookie)
	}
	p := b.login(controltest.ReadToken)
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/" {
		t.Fatalf("login: %d to %q", p.status, p.header.Get("Location"))
	}
	c := b.cookie
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" || c.MaxAge <= 0 {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/ui/ and a lifetime", c)
	}
	home := b.do(http.MethodGet, "/ui/", nil)
	if home.status != http.StatusOK || !strings.Contains(home.body, `id="role">read-only<`) {
		t.Fatalf("map page: %d, read-only role not shown", home.status)
	}
	// A login redirected from a page returns to it, and never leaves /ui.
	for next, want := range map[string]string{"/ui/keys": "/ui/keys", "https://evil.example/": "/ui/", "//evil.example/ui/": "/ui/"} {
		p := b.do(http.MethodPost, "/ui/login", url.Values{"token": {controltest.AdminToken}, "next": {next}})
		if p.header.Get("Location") != want {
			t.Errorf("login with next=%q went to %q, want %q", next, p.header.Get("Location"), want)
		}
	}
	if p := b.do(http.MethodPost, "/ui/logout", nil); p.status != http.StatusSeeOther || b.cookie.MaxAge >= 0 {
		t.Errorf("logout: %d, cookie %+v", p.status, b.cookie)
	}
}

func TestReadOnlyTokenCannotChange(t *testing.T) {
	f := start(t)
	b := f.browser(t)
	b.login(controltest.ReadToken)
	keys := b.do(http.MethodGet, "/ui/keys", nil)
	if keys.status != http.StatusOK || !strings.Contains(keys.body, `data-key="key-open"`) {
		t.Fatalf("keys page for a reader: %d", keys.status)
	}
	if strings.Contains(keys.body, `id="create-key"`) || strings.Contains(keys.body, "/revoke") {
		t.Error("a read-only session is offered create or revoke")
	}
	create := b.do(http.MethodPost, "/ui/keys", url.Values{"id": {"reader-made"}}, "HX-Request", "true")
	if create.status != http.StatusForbidden || !strings.Contains(create.body, "read-only") {
		t.Errorf("create by a reader: %d %s, want 403 with the API's reason", create.status, create.body)
	}
	f.api(t, http.MethodGet, "/v1/control/keys/reader-made", "", http.StatusNotFound)
	revoke := b.do(http.MethodPost, "/ui/keys/key-open/revoke", nil, "HX-Request", "true")
	if revoke.status != http.StatusForbidden {
		t.Errorf("revoke by a reader: %d, want 403", revoke.status)
	}
	f.api(t, http.MethodGet, "/v1/control/keys/key-open", "", http.StatusOK)
	move := b.do(http.MethodPost, "/ui/placements/tiny-eu/move", url.Values{"to": {"region:us-east"}}, "HX-Request", "true")
	if move.status != http.StatusForbidden {
		t.Errorf("move by a reader: %d, want 403", move.status)
	}
	if got := f.api(t, http.MethodGet, "/v1/control/placements/tiny-eu", "", http.StatusOK); !strings.Contains(string(got), `"region":"eu-west"`) {
		t.Errorf("placement changed by a reader: %s", got)
	}
}

func TestAdminCreatesAndRevokesKey(t *testing.T) {
	f := start(t)
	b := f.browser(t)
	b.login(controltest.AdminToken)
	p := b.do(http.MethodPost, "/ui/keys", url.Values{"id": {"console-made"}, "tenant": {"open"}, "rpm": {"60"}}, "HX-Request", "true")
	if p.status != http.StatusOK {
		t.Fatalf("create: %d %s", p.status, p.body)
	}
	secret := regexp.MustCompile(`id="created-secret">(mk-[0-9a-f]{48})<`).FindStringSubmatch(p.body)
	if secret == nil {
		t.Fatalf("the new key is not shown once: %s", p.body)
	}
	var k struct {
		Hash   string `json:"hash"`
		Tenant string `json:"tenant"`
		RPM    int    `json:"rpm"`
	}
	json.Unmarshal(f.api(t, http.MethodGet, "/v1/control/keys/console-made", "", http.StatusOK), &k)
	sum := sha256.Sum256([]byte(secret[1]))
	if k.Hash != "sha256:"+hex.EncodeToString(sum[:]) || k.Tenant != "open" || k.RPM != 60 {
		t.Errorf("stored key %+v: want the shown key's hash, tenant open, rpm 60", k)
	}
	if keys := b.do(http.MethodGet, "/ui/keys", nil); strings.Contains(keys.body, secret[1]) {
		t.Error("the key is shown again after its creation")
	}
	// The API's own validation reaches the page.
	dup := b.do(http.MethodPost, "/ui/keys", url.Values{"id": {"console-made"}}, "HX-Request", "true")
	if dup.status != http.StatusConflict || !strings.Contains(dup.body, `id="keys-error"`) {
		t.Errorf("creating an existing key: %d, want 409 with the error shown", dup.status)
	}
	rv := b.do(http.MethodPost, "/ui/keys/console-made/revoke", nil, "HX-Request", "true")
	if rv.status != http.StatusOK || strings.Contains(rv.body, `data-key="console-made"`) {
		t.Errorf("revoke: %d, key still listed: %v", rv.status, strings.Contains(rv.body, `data-key="console-made"`))
	}
	f.api(t, http.MethodGet, "/v1/control/keys/console-made", "", http.StatusNotFound)
}

func TestCrossSitePostRefused(t *testing.T) {
	f := start(t)
	b := f.browser(t)
	b.login(controltest.AdminToken)
	for _, hdr := range [][]string{{"Sec-Fetch-Site", "cross-site"}, {"Origin", "https://evil.example"}} {
		p := b.do(http.MethodPost, "/ui/keys/key-open/revoke", nil, hdr...)
		if p.status != http.StatusForbidden {
			t.Errorf("POST with %s: %s: %d, want 403", hdr[0], hdr[1], p.status)
		}
	}
	f.api(t, http.MethodGet, "/v1/control/keys/key-open", "", http.StatusOK)
}

func TestAdminMovesPlacement(t *testing.T) {
	f := start(t)
	b := f.browser(t)
	b.login(controltest.AdminToken)
	p := b.do(http.MethodPost, "/ui/placements/tiny-eu/move", url.Values{"to": {"node:edge-b"}}, "HX-Request", "true")
	if p.status != http.StatusOK || !strings.Contains(p.body, `id="placements-notice"`) {
		t.Fatalf("move: %d %s", p.status, p.body)
	}
	// The page shows the placement where it is now, and where the
	// published table resolves it.
	if !regexp.MustCompile(`<td class="on">node edge-b</td>`).MatchString(p.body) || !strings.Contains(p.body, `<td class="nodes">edge-b</td>`) {
		t.Errorf("the page after the move does not show it on edge-b: %s", p.body)
	}
	got := string(f.api(t, http.MethodGet, "/v1/control/placements/tiny-eu", "", http.StatusOK))
	if !strings.Contains(got, `"node":"edge-b"`) || !strings.Contains(got, `"region":""`) || !strings.Contains(got, `"desired":1`) {
		t.Errorf("placement after the move: %s", got)
	}
	bad := b.do(http.MethodPost, "/ui/placements/tiny-eu/move", url.Values{"to": {"node:nowhere"}}, "HX-Request", "true")
	if bad.status != http.StatusBadRequest || !strings.Contains(bad.body, "nowhere") {
		t.Errorf("move to an unknown node: %d %s, want 400 naming it", bad.status, bad.body)
	}
}

func TestPagesRender(t *testing.T) {
	f := start(t)
	b := f.browser(t)
	b.login(controltest.ReadToken)
	home := b.do(http.MethodGet, "/ui/", nil)
	for _, want := range []string{`data-region="eu-west"`, `data-region="us-east"`, `data-pop="edge-a"`, `data-pop="edge-b"`, `id="table-revision"`, `data-model="tiny"`} {
		if !strings.Contains(home.body, want) {
			t.Errorf("map page lacks %s", want)
		}
	}
	for path, want := range map[string]string{"/ui/routes": `data-model="tiny"`, "/ui/spend?by=model&range=24h": `id="spend-chart"`,
		"/ui/placements": `data-placement="tiny-eu"`, "/ui/explain": `<option value="edge-a">`} {
		if p := b.do(http.MethodGet, path, nil); p.status != http.StatusOK || !strings.Contains(p.body, want) {
			t.Errorf("GET %s: %d, lacks %s", path, p.status, want)
		}
	}
	// Every answer carries the policy, and the page loads only its own
	// origin's script.
	if csp := home.header.Get("Content-Security-Policy"); csp != console.ContentSecurityPolicy || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	if strings.Contains(home.body, "http://") || strings.Contains(home.body, "https://") || strings.Contains(home.body, "<script>") {
		t.Error("the page links another origin or carries an inline script")
	}
	js := b.do(http.MethodGet, "/ui/static/htmx.min.js", nil)
	if js.status != http.StatusOK || !strings.Contains(js.header.Get("Content-Type"), "javascript") || !strings.Contains(js.body, "htmx") {
		t.Errorf("htmx: %d %s", js.status, js.header.Get("Content-Type"))
	}
}

func TestExplainAsksTheEdge(t *testing.T) {
	f := start(t)
	b := f.browser(t)
	b.login(controltest.ReadToken)
	p := b.do(http.MethodGet, "/ui/explain/run?edge=edge-a&model=tiny&location=region:eu-west&key=key-open", nil, "HX-Request", "true")
	if p.status != http.StatusOK {
		t.Fatalf("explain: %d %s", p.status, p.body)
	}
	for _, want := range []string{`data-target="peer/edge-a"`, "412.5", `data-target="provider/mock-us"`, "region-not-allowed", "nearest"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("plan lacks %s: %s", want, p.body)
		}
	}
	f.mu.Lock()
	q := f.edgeQueries[len(f.edgeQueries)-1]
	f.mu.Unlock()
	if q.Get("model") != "tiny" || q.Get("lat") != "53.35" || q.Get("lon") != "-6.26" || q.Get("key") != "key-open" {
		t.Errorf("the edge was asked %v, want the region's coordinates and the key", q)
	}
	// The edge's refusal is shown, not a broken page.
	p = b.do(http.MethodGet, "/ui/explain/run?edge=edge-a&model=nope", nil, "HX-Request", "true")
	if !strings.Contains(p.body, "does not exist") {
		t.Errorf("a refused dry run: %d %s", p.status, p.body)
	}
	// Only configured edges are asked.
	if p := b.do(http.MethodGet, "/ui/explain/run?edge=elsewhere&model=tiny", nil, "HX-Request", "true"); p.status != http.StatusBadRequest {
		t.Errorf("an unconfigured edge: %d, want 400", p.status)
	}
}

func TestParseEdges(t *testing.T) {
	got, err := console.ParseEdges(" a=http://10.0.0.1:8080/ , b=https://b.example")
	if err != nil || len(got) != 2 || got[0] != (console.Edge{ID: "a", URL: "http://10.0.0.1:8080"}) || got[1].URL != "https://b.example" {
		t.Fatalf("ParseEdges: %v %v", got, err)
	}
	if _, err := console.ParseEdges("no-equals"); err == nil {
		t.Error("an edge without id= parsed")
	}
	cfg := console.Config{API: http.NotFoundHandler(), Authorize: func(string) (bool, bool) { return false, false },
		Edges: []console.Edge{{ID: "x", URL: "ftp://x"}}}
	if _, err := console.New(cfg); err == nil {
		t.Error("an ftp edge was accepted")
	}
}
