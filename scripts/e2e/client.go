package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/scripts/devmesh/mesh"
)

// env is what scenarios share: the mesh, its edges and an HTTP client.
type env struct {
	ctx        context.Context
	m          *mesh.Mesh
	eu, us, ap *mesh.Edge
	hc         *http.Client
	long       bool
}

func newEnv(ctx context.Context, m *mesh.Mesh, long bool) *env {
	return &env{ctx: ctx, m: m, eu: m.Edges[0], us: m.Edges[1], ap: m.Edges[2], long: long,
		hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}}
}

// scenario is one end-to-end check; run returns what it proved.
type scenario struct {
	id, name string
	needs3   bool // three control nodes
	run      func(x *env) (string, error)
}

// run runs one scenario, turning a panic into its failure.
func (x *env) run(sc scenario) (proved string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return sc.run(x)
}

// hold is how long traffic runs before and after a kill or a move.
func (x *env) hold() time.Duration {
	if x.long {
		return 10 * time.Second
	}
	return time.Second
}

// heal restarts whatever an earlier scenario left stopped (it failed
// before its own clean-up), so one failure does not fail the rest.
func (x *env) heal() error {
	for i, c := range x.m.Controls {
		if !c.Alive() {
			if err := x.m.RestartControl(i); err != nil {
				return err
			}
		}
	}
	for _, e := range x.m.Edges {
		e.Relay.Partition(false)
		if !e.Alive() {
			if err := x.m.Restart(x.ctx, e); err != nil {
				return err
			}
		}
	}
	for _, mk := range x.m.Mocks {
		mk.SetDown(false)
	}
	return nil
}

// edge is the edge of a region.
func (x *env) edge(region string) *mesh.Edge {
	for _, e := range x.m.Edges {
		if e.Region == region {
			return e
		}
	}
	panic("no edge in " + region)
}

// answer is one response, read whole.
type answer struct {
	status int
	route  string
	rev    string
	hdr    http.Header
	body   []byte
}

func (a answer) target() string { return mesh.RouteField(a.route, "target") }

func (a answer) String() string {
	b := string(a.body)
	if len(b) > 300 {
		b = b[:300] + "…"
	}
	return fmt.Sprintf("%d route %q: %s", a.status, a.route, b)
}

// Header pairs for a request.
func located(s mesh.Site) []string  { return []string{"X-Meridian-Client-Location", s.Location()} }
func fromIP(region string) []string { return []string{"X-Forwarded-For", mesh.GeoIP(region)} }

func site(region string) mesh.Site {
	for _, s := range mesh.Sites {
		if s.Region == region {
			return s
		}
	}
	panic("no site " + region)
}

// chat sends an OpenAI chat request, not streamed.
func (x *env) chat(e *mesh.Edge, model, key string, hdr ...string) (answer, error) {
	body := `{"model":"` + model + `","max_tokens":8,"messages":[{"role":"user","content":"hello"}]}`
	return x.post(e, "/v1/chat/completions", body, key, hdr...)
}

// messages sends an Anthropic Messages request; streamed when stream.
func (x *env) messages(e *mesh.Edge, model, key string, stream bool, hdr ...string) (answer, error) {
	body := fmt.Sprintf(`{"model":%q,"max_tokens":8,"stream":%t,"messages":[{"role":"user","content":"hello"}]}`, model, stream)
	return x.post(e, "/v1/messages", body, key, append(hdr, "anthropic-version", "2023-06-01")...)
}

func (x *env) post(e *mesh.Edge, path, body, key string, hdr ...string) (answer, error) {
	req, err := http.NewRequestWithContext(x.ctx, http.MethodPost, e.URL+path, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := x.hc.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("POST %s%s: %w", e.URL, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, route: resp.Header.Get("X-Meridian-Route"), rev: resp.Header.Get("X-Meridian-Table-Rev"), hdr: resp.Header, body: b}
	if err != nil {
		return a, fmt.Errorf("POST %s%s: reading the body: %w", e.URL, path, err)
	}
	return a, nil
}

// expect sends a chat request and checks its status and target.
func (x *env) expect(e *mesh.Edge, model, key string, status int, target string, hdr ...string) (answer, error) {
	a, err := x.chat(e, model, key, hdr...)
	if err != nil {
		return a, err
	}
	if a.status != status || (target != "" && a.target() != target) {
		return a, fmt.Errorf("%s asked %s for %s (%v): want %d from %s, got %v", e.ID, model, key[:12], hdr, status, target, a)
	}
	return a, nil
}

// eventually polls check every 100ms until it returns nil or timeout.
func (x *env) eventually(timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v, %s: %w", timeout, what, err)
		}
		select {
		case <-x.ctx.Done():
			return x.ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// streamOne sends a streamed OpenAI chat request and reads it to the
// end. started says whether any content reached the client before an
// error: a request that failed before then counts against the mesh.
func (x *env) streamOne(e *mesh.Edge, model, key string, hdr ...string) (route string, started bool, err error) {
	body := `{"model":"` + model + `","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hello"}]}`
	req, err := http.NewRequestWithContext(x.ctx, http.MethodPost, e.URL+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := x.hc.Do(req)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	route = resp.Header.Get("X-Meridian-Route")
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return route, false, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	done := false
	for sc.Scan() {
		line := sc.Text()
		if line == "data: [DONE]" {
			done = true
			break
		}
		if strings.HasPrefix(line, "data: ") {
			if strings.Contains(line, `"error"`) {
				return route, started, fmt.Errorf("stream error: %s", line)
			}
			if strings.Contains(line, `"content"`) {
				started = true
			}
		}
	}
	if !done {
		return route, started, errors.New("stream ended without [DONE]")
	}
	return route, started, nil
}

// sdkResult is what scripts/e2e/sdk.cjs prints.
type sdkResult struct {
	Text   string `json:"text"`
	Route  string `json:"route"`
	Events int    `json:"events"`
}

// nodeSDK streams one request through an official Node SDK ("openai" or
// "anthropic") from scripts/sdktest/node/node_modules.
func (x *env) nodeSDK(kind string, e *mesh.Edge, model, key, location string) (sdkResult, error) {
	mods, _ := filepath.Abs("scripts/sdktest/node/node_modules")
	if _, err := os.Stat(filepath.Join(mods, "openai", "package.json")); err != nil {
		return sdkResult{}, fmt.Errorf("the Node SDKs are not installed (cd scripts/sdktest/node && npm ci): %w", err)
	}
	ctx, cancel := context.WithTimeout(x.ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "scripts/e2e/sdk.cjs", kind, e.URL, key, model, location)
	cmd.Env = append(os.Environ(), "NODE_PATH="+mods)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return sdkResult{}, fmt.Errorf("node %s SDK: %v: %s", kind, err, ee.Stderr)
		}
		return sdkResult{}, fmt.Errorf("node %s SDK: %w", kind, err)
	}
	var r sdkResult
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("node %s SDK printed %q: %w", kind, out, err)
	}
	return r, nil
}

// tableRevisions are the edges' table revisions, and whether each is
// stale, from their /readyz.
func (x *env) tableRevisions() (revs []uint64, stale []bool, err error) {
	for _, e := range x.m.Edges {
		rd, err := e.Readiness()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", e.ID, err)
		}
		if rd.Table == nil {
			return nil, nil, fmt.Errorf("%s reports no table", e.ID)
		}
		revs, stale = append(revs, rd.Table.Revision), append(stale, rd.Table.Stale)
	}
	return revs, stale, nil
}
