// Package console is the control plane's web console, served at /ui by
// every control node: a world map of the regions and PoPs with their
// health, table revision and lag, models placed and ready, and traffic;
// per-model routes; a live decision explorer; spend over time; keys with
// create and revoke; placements with move.
//
// Pages are rendered on the server from html/template, and htmx (from
// npm, copied into static/ by `make ui` and committed) swaps fragments
// in place. Everything the browser loads is embedded in the binary and
// served from this origin, under a Content-Security-Policy that allows
// nothing else.
//
// Auth is the management API's: an operator logs in with an API token,
// which the console keeps (base64url-encoded) in a cookie it sets itself (HttpOnly, so no
// script reads it; SameSite=Strict, so no other site's page sends it;
// Secure over TLS; Path /ui). Every page is built from management API
// requests made in-process with that token, so a read-only token sees
// everything and changes nothing, exactly as through the API.
//
// This package must never change state other than through Config.API,
// never call any address but the configured edges' dry-run endpoints,
// never load or link anything from another origin, and never log or
// render a token.
package console

import (
	"bytes"
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the console is served.
const Prefix = "/ui/"

// cookieName holds the session's API token.
const cookieName = "meridian_console"

// ContentSecurityPolicy is sent with every answer: scripts, styles and
// requests from this origin only, no inline script or style, no frames,
// forms posting only here.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Edge is an edge whose dry-run endpoint (GET /v1/meridian/route) the
// decision explorer asks. The control plane cannot compute a decision
// itself: the router is edge code, and its plan depends on what that
// edge sees (gossip, links, breakers).
type Edge struct {
	// ID names the edge, usually its node ID.
	ID string
	// URL is the edge's HTTP API, such as http://10.0.0.5:8080.
	URL string
}

// Config configures the console.
type Config struct {
	// API is the management API (with the distribution status beside
	// it) that every page reads and writes through, in-process.
	API http.Handler
	// Authorize tells what a token may do (api.Server.Authorize).
	Authorize func(token string) (read, admin bool)
	// Edges are the edges the decision explorer may ask; empty turns
	// the explorer into a page that says how to configure one.
	Edges []Edge
	// Client calls the edges; nil means a client with a 5 s timeout.
	Client *http.Client
	// Secure marks the session cookie Secure, for a node serving TLS.
	Secure bool
	// SessionTTL is how long a login lasts. Default 12h.
	SessionTTL time.Duration
	// Logger receives failures that are not the operator's.
	Logger *slog.Logger
	// Now is the clock (spend ranges). Nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults: 12-hour sessions, edges asked
// with a 5 s timeout, the default logger and clock. API and Authorize
// must still be set.
func DefaultConfig() Config {
	return Config{
		Client:     &http.Client{Timeout: 5 * time.Second},
		SessionTTL: 12 * time.Hour,
		Logger:     slog.Default(),
		Now:        time.Now,
	}
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if c.API == nil {
		errs = append(errs, errors.New("console: API handler is required"))
	}
	if c.Authorize == nil {
		errs = append(errs, errors.New("console: Authorize is required"))
	}
	for _, e := range c.Edges {
		u, err := url.Parse(e.URL)
		if e.ID == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("console: edge %q: want ID=http(s)://host:port, got %q", e.ID, e.URL))
		}
	}
	return errors.Join(errs...)
}

// ParseEdges reads "id=url,id=url" (the -console-edges flag).
func ParseEdges(s string) ([]Edge, error) {
	var out []Edge
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		id, u, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("console edge %q: want id=http://host:port", p)
		}
		out = append(out, Edge{ID: strings.TrimSpace(id), URL: strings.TrimSuffix(strings.TrimSpace(u), "/")})
	}
	return out, nil
}

// Console serves /ui.
type Console struct {
	cfg    Config
	pages  map[string]*template.Template
	static http.Handler
	mux    *http.ServeMux
}

// New returns the console. Unset fields take DefaultConfig's values.
func New(cfg Config) (*Console, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	def := DefaultConfig()
	if cfg.Client == nil {
		cfg.Client = def.Client
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = def.SessionTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	if cfg.Now == nil {
		cfg.Now = def.Now
	}
	c := &Console{cfg: cfg, pages: map[string]*template.Template{}, mux: http.NewServeMux()}
	if err := c.parse(); err != nil {
		return nil, err
	}
	sub, _ := fs.Sub(staticFS, "static")
	c.static = http.StripPrefix(Prefix+"static/", http.FileServerFS(sub))
	c.routes()
	return c, nil
}

func (c *Console) parse() error {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return fmt.Errorf("console template %s: %w", n, err)
		}
		c.pages[base] = t
	}
	return nil
}

func (c *Console) routes() {
	c.mux.Handle("GET "+Prefix+"static/", c.static)
	c.mux.HandleFunc("GET "+Prefix+"login", c.loginPage)
	c.mux.HandleFunc("POST "+Prefix+"login", c.login)
	c.mux.HandleFunc("POST "+Prefix+"logout", c.logout)
	c.mux.Handle("GET "+Prefix+"{$}", c.session(c.overview))
	c.mux.Handle("GET "+Prefix+"routes", c.session(c.routesPage))
	c.mux.Handle("GET "+Prefix+"explain", c.session(c.explainPage))
	c.mux.Handle("GET "+Prefix+"explain/run", c.session(c.explainRun))
	c.mux.Handle("GET "+Prefix+"spend", c.session(c.spend))
	c.mux.Handle("GET "+Prefix+"keys", c.session(c.keys))
	c.mux.Handle("POST "+Prefix+"keys", c.session(c.createKey))
	c.mux.Handle("POST "+Prefix+"keys/{id}/revoke", c.session(c.revokeKey))
	c.mux.Handle("GET "+Prefix+"placements", c.session(c.placements))
	c.mux.Handle("POST "+Prefix+"placements/{id}/move", c.session(c.movePlacement))
	c.mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such console page", http.StatusNotFound)
	})
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	if !strings.HasPrefix(r.URL.Path, Prefix+"static/") {
		h.Set("Cache-Control", "no-store")
	}
	if r.Method == http.MethodPost && !sameOrigin(r) {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	c.mux.ServeHTTP(w, r)
}

// sameOrigin refuses a POST a browser says came from another site. The
// SameSite=Strict cookie already keeps such a request unauthenticated;
// this also covers the login form, which has no cookie yet.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		return err == nil && u.Host == r.Host
	}
	return true
}

// sess is a logged-in request's token and role.
type sess struct {
	token string
	admin bool
}

type sessKey struct{}

// session serves h to a request carrying a valid token, and sends any
// other to the login page (htmx follows HX-Redirect).
func (c *Console) session(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := sessionToken(r)
		var read, admin bool
		if tok != "" {
			read, admin = c.cfg.Authorize(tok)
		}
		if !read {
			to := Prefix + "login"
			if r.Method == http.MethodGet && r.URL.Path != Prefix {
				to += "?next=" + url.QueryEscape(r.URL.Path)
			}
			if r.Header.Get("HX-Request") != "" {
				w.Header().Set("HX-Redirect", to)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, to, http.StatusSeeOther)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessKey{}, sess{token: tok, admin: admin})))
	})
}

// The cookie carries the token base64url-encoded, so that a token with
// bytes a cookie value cannot hold (space, comma, quote) survives.
func sessionToken(r *http.Request) string {
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return ""
	}
	tok, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil {
		return ""
	}
	return string(tok)
}

func sessionOf(r *http.Request) sess {
	s, _ := r.Context().Value(sessKey{}).(sess)
	return s
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "login", &view{Title: "Log in", Data: loginData{Next: safeNext(r.URL.Query().Get("next"))}})
}

type loginData struct{ Next string }

// safeNext keeps a post-login redirect inside the console.
func safeNext(n string) string {
	if !strings.HasPrefix(n, Prefix) || strings.ContainsAny(n, "\\\r\n") || strings.HasPrefix(n, "//") {
		return Prefix
	}
	return n
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	tok := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	if read, _ := c.cfg.Authorize(tok); tok == "" || !read {
		c.render(w, r, http.StatusUnauthorized, "login", &view{Title: "Log in", Error: "That token is not an admin or read-only token of this cluster.", Data: loginData{Next: next}})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: base64.RawURLEncoding.EncodeToString([]byte(tok)), Path: Prefix, MaxAge: int(c.cfg.SessionTTL / time.Second),
		HttpOnly: true, Secure: c.cfg.Secure, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix, MaxAge: -1,
		HttpOnly: true, Secure: c.cfg.Secure, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// view is what every template gets.
type view struct {
	Title  string
	Active string
	Admin  bool
	// Error is shown above the page; Notice beside it, in green.
	Error, Notice string
	Data          any
}

// render executes a page, or, for an htmx request naming a fragment
// (fragment != ""), only that fragment.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page string, v *view) {
	c.renderFragment(w, r, status, page, "layout", v)
}

func (c *Console) renderFragment(w http.ResponseWriter, r *http.Request, status int, page, tmpl string, v *view) {
	t, ok := c.pages[page]
	if !ok {
		http.Error(w, "no template "+page, http.StatusInternalServerError)
		return
	}
	if s, ok := r.Context().Value(sessKey{}).(sess); ok {
		v.Admin = s.admin
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, tmpl, v); err != nil {
		c.cfg.Logger.Error("console template", "page", page, "err", err)
		http.Error(w, "console template failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// apiError is the management API's error body.
type apiError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field"`
}

func (e *apiError) Error() string {
	msg := e.Message
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	return fmt.Sprintf("%s (%d %s)", msg, e.Status, e.Code)
}

// call makes a management API request in-process with the session's
// token and decodes a 2xx answer into out (when not nil). Any other
// answer is an *apiError.
func (c *Console) call(r *http.Request, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(r.Context(), method, path, rd)
	if err != nil {
		return err
	}
	req.RemoteAddr, req.Host = r.RemoteAddr, r.Host
	req.Header.Set("Authorization", "Bearer "+sessionOf(r).token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	c.cfg.API.ServeHTTP(rec, req)
	if rec.status/100 != 2 {
		var e struct {
			Error apiError `json:"error"`
		}
		if json.Unmarshal(rec.body.Bytes(), &e) != nil || e.Error.Code == "" {
			e.Error.Code, e.Error.Message = "error", strings.TrimSpace(rec.body.String())
		}
		e.Error.Status = rec.status
		return &e.Error
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
		return fmt.Errorf("decode %s %s: %w", method, path, err)
	}
	return nil
}

// statusOf is the HTTP status an error from call deserves.
func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return http.StatusBadGateway
}

// recorder is an in-memory http.ResponseWriter for in-process API calls.
type recorder struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}
