// Package api serves the control plane's management API, REST and JSON
// under /v1/control/: CRUD for every fleet entity, cluster membership,
// snapshots, and blocking queries, with bearer-token roles.
//
// Writes go through Raft on the leader; a follower forwards them over
// HTTP, and while there is no leader a write is held for up to
// Config.HoldTimeout. Reads are served from the local state unless the
// caller asks for ?consistent. This package must never change state other
// than through cluster.Node.Apply, and never log a token or a request
// body.
//
// API history (v1 only ever adds, so a v1 client keeps working until a
// removal listed here):
//   - 2026-12: a batch put carries its entity under "entity",
//     {"kind": "provider", "entity": {...}} (BatchPut). The flat shape
//     before it, the entity's fields beside "kind", could not carry a
//     provider's own "kind" field. It is still read, with a
//     "Deprecation: true" answer header, and goes away in the first
//     release after 2027-06-01, which answers it with 400.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/cluster"
	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Headers the API reads and sets.
const (
	// HeaderIndex carries the state's index: the Raft index of the last
	// change a read reflects, or the index a write applied at.
	HeaderIndex = "X-Meridian-Index"
	// HeaderRequestID names a write; a retry with the same ID applies
	// once.
	HeaderRequestID = "X-Meridian-Request-Id"
	// HeaderKnownLeader says whether the serving node knew a leader.
	HeaderKnownLeader = "X-Meridian-Known-Leader"
	// headerForwarded marks a request forwarded once, so a node with a
	// stale view of the leader never forwards it again.
	headerForwarded = "X-Meridian-Forwarded"
)

// Error codes beyond fsm's.
const (
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNoLeader     = "no_leader"
	CodeUnknown      = "unknown_outcome"
	CodeTooLarge     = "too_large"
	CodeInternal     = "internal"
)

type role int

const (
	roleNone role = iota
	roleRead
	roleAdmin
)

// Server is the management API of one control node.
type Server struct {
	cfg     Config
	node    *cluster.Node
	client  *http.Client
	admin   [][32]byte
	readers [][32]byte
	mux     *http.ServeMux
	met     *metrics
	valid   atomic.Pointer[validState] // see routable.go
	// held counts the requests waiting in hold for a leader.
	held atomic.Int64
}

// New returns the API for a node.
func New(cfg Config, node *cluster.Node) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("api config: %w", err)
	}
	met, err := newMetrics(node, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, node: node, client: cfg.Client, mux: http.NewServeMux(), met: met}
	if s.client == nil {
		s.client = &http.Client{Transport: &http.Transport{
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	for _, t := range cfg.AdminTokens {
		s.admin = append(s.admin, sha256.Sum256([]byte(t)))
	}
	for _, t := range cfg.ReadTokens {
		s.readers = append(s.readers, sha256.Sum256([]byte(t)))
	}
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	// Who a node is and its metrics need a read token unless the config
	// opens them (OpenEndpoints); health never does (security.go).
	s.mux.Handle("GET /v1/control/self", s.readOrOpen(s.self))
	s.mux.Handle("GET /metrics", s.readOrOpen(s.met.handler().ServeHTTP))
	s.mux.HandleFunc("GET /v1/control/health", s.health)
	s.mux.Handle("GET /v1/control/cluster", s.auth(roleRead, s.clusterInfo))
	s.mux.Handle("GET /v1/control/table-key", s.auth(roleRead, s.tableKey))
	s.mux.Handle("POST /v1/control/table-key/{step}", s.auth(roleAdmin, s.rotateTableKey))
	s.mux.Handle("POST /v1/control/cluster/join", s.auth(roleAdmin, s.join))
	s.mux.Handle("DELETE /v1/control/cluster/peers/{id}", s.auth(roleAdmin, s.removePeer))
	s.mux.Handle("POST /v1/control/cluster/transfer", s.auth(roleAdmin, s.transfer))
	s.mux.Handle("GET /v1/control/snapshot", s.auth(roleAdmin, s.snapshotSave))
	s.mux.Handle("PUT /v1/control/snapshot", s.auth(roleAdmin, s.snapshotRestore))
	s.mux.Handle("POST /v1/control/batch", s.auth(roleAdmin, s.batch))
	s.mux.Handle("GET /v1/control/usage", s.auth(roleRead, s.usageQuery))
	s.identityRoutes()
	s.mux.Handle("GET /v1/control/{kind}", s.auth(roleRead, s.list))
	s.mux.Handle("POST /v1/control/{kind}", s.auth(roleAdmin, s.create))
	s.mux.Handle("GET /v1/control/{kind}/{id...}", s.auth(roleRead, s.get))
	s.mux.Handle("PUT /v1/control/{kind}/{id...}", s.auth(roleAdmin, s.put))
	s.mux.Handle("DELETE /v1/control/{kind}/{id...}", s.auth(roleAdmin, s.del))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, &fsm.Error{Code: fsm.CodeNotFound, Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// auth checks the bearer token's role. Every configured token is compared,
// in constant time, so timing tells nothing about which one nearly
// matched.
func (s *Server) auth(need role, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(s.admin) == 0 && len(s.readers) == 0 && s.cfg.AllowNoAuth {
			h(w, r)
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			writeError(w, http.StatusUnauthorized, &fsm.Error{Code: CodeUnauthorized, Message: "missing bearer token"})
			return
		}
		switch got := s.roleOf(tok); {
		case got == roleNone:
			writeError(w, http.StatusUnauthorized, &fsm.Error{Code: CodeUnauthorized, Message: "unknown token"})
		case got < need:
			writeError(w, http.StatusForbidden, &fsm.Error{Code: CodeForbidden, Message: "this token is read-only"})
		default:
			h(w, r)
		}
	})
}

// roleOf compares tok with every configured token in constant time.
func (s *Server) roleOf(tok string) role {
	sum := sha256.Sum256([]byte(tok))
	got := roleNone
	for _, a := range s.admin {
		if subtle.ConstantTimeCompare(sum[:], a[:]) == 1 {
			got = roleAdmin
		}
	}
	for _, a := range s.readers {
		if subtle.ConstantTimeCompare(sum[:], a[:]) == 1 && got == roleNone {
			got = roleRead
		}
	}
	return got
}

// Authorize reports what a bearer token may do here: read, and write
// too (admin). The web console (control/console) asks it at login to
// tell an operator which role the token has; every request the console
// then makes still goes through this API's own checks.
func (s *Server) Authorize(token string) (read, admin bool) {
	if len(s.admin) == 0 && len(s.readers) == 0 && s.cfg.AllowNoAuth {
		return true, true
	}
	if token == "" {
		return false, false
	}
	got := s.roleOf(token)
	return got >= roleRead, got == roleAdmin
}

// errorBody is the JSON shape of every error.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field,omitempty"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, e *fsm.Error) {
	if sw, ok := w.(*statusWriter); ok {
		sw.code = e.Code
	}
	var b errorBody
	b.Error.Code, b.Error.Message, b.Error.Field = e.Code, e.Message, e.Field
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encode response"}}`)
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
	w.Write([]byte("\n"))
}

// statusFor maps an error code to its HTTP status.
func statusFor(code string) int {
	switch code {
	case fsm.CodeInvalid, fsm.CodeReference:
		return http.StatusBadRequest
	case fsm.CodeNotFound:
		return http.StatusNotFound
	case fsm.CodeConflict:
		return http.StatusConflict
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeForbidden:
		return http.StatusForbidden
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeNoLeader, CodeUnknown:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func fail(w http.ResponseWriter, err error) {
	var fe *fsm.Error
	if errors.As(err, &fe) {
		writeError(w, statusFor(fe.Code), fe)
		return
	}
	writeError(w, http.StatusInternalServerError, &fsm.Error{Code: CodeInternal, Message: err.Error()})
}

// fail answers with err, logging failures that are not the caller's.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var fe *fsm.Error
	if !errors.As(err, &fe) {
		s.cfg.Logger.Error("control API request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	fail(w, err)
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, &fsm.Error{Code: CodeTooLarge, Message: fmt.Sprintf("body is over the %d byte limit", limit)})
		} else {
			writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Message: "read body: " + err.Error()})
		}
		return nil, false
	}
	return b, true
}

func kindOf(w http.ResponseWriter, r *http.Request) (*fsm.Kind, bool) {
	k, ok := fsm.KindByName(r.PathValue("kind"))
	if !ok || k.Plural != r.PathValue("kind") {
		writeError(w, http.StatusNotFound, &fsm.Error{Code: fsm.CodeNotFound, Field: "kind",
			Message: fmt.Sprintf("no such entity kind %q", r.PathValue("kind"))})
		return nil, false
	}
	return k, true
}

// Self describes one control node; GET /v1/control/self serves it without
// a token, so a node can be joined by its API address alone.
// Voters discovering each other read it too (cluster.Discover).
type Self = cluster.Self

func (s *Server) self(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Self{ID: s.node.ID(), Name: s.node.Name(), RaftAddr: s.node.RaftAddr(), APIAddr: s.node.APIAddr()})
}

// ClusterInfo is GET /v1/control/cluster.
type ClusterInfo struct {
	Self     string           `json:"self"`
	LeaderID string           `json:"leader_id,omitempty"`
	Leader   string           `json:"leader,omitempty"`
	Servers  []cluster.Server `json:"servers"`
	Stats    cluster.Stats    `json:"stats"`
}

func (s *Server) clusterInfo(w http.ResponseWriter, r *http.Request) {
	servers, err := s.node.Servers()
	if err != nil {
		fail(w, err)
		return
	}
	info := ClusterInfo{Self: s.node.ID(), Servers: servers, Stats: s.node.Stats()}
	info.LeaderID, info.Leader, _ = s.node.Leader()
	s.setIndex(w)
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) setIndex(w http.ResponseWriter) uint64 {
	idx := s.node.FSM().State().Index()
	w.Header().Set(HeaderIndex, strconv.FormatUint(idx, 10))
	_, _, known := s.node.Leader()
	w.Header().Set(HeaderKnownLeader, strconv.FormatBool(known))
	return idx
}

// read prepares a read: it waits for a blocking query, then for
// ?consistent makes sure this node's state is linearizable, forwarding
// to the leader when it is not. It reports whether the caller should go
// on and serve from local state.
func (s *Server) read(w http.ResponseWriter, r *http.Request) bool {
	q := r.URL.Query()
	if v := q.Get("index"); v != "" {
		idx, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Field: "index", Message: "must be a number"})
			return false
		}
		wait := s.cfg.DefaultWait
		if v := q.Get("wait"); v != "" {
			if wait, err = time.ParseDuration(v); err != nil || wait <= 0 {
				writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Field: "wait", Message: `must be a duration such as "30s"`})
				return false
			}
		}
		wait = min(wait, s.cfg.MaxWait)
		// Jitter spreads the wake-ups of many watchers that timed out
		// together.
		wait = backoff.Between(wait, wait+wait/16)
		s.block(r.Context(), idx, wait)
	}
	if _, ok := q["consistent"]; !ok {
		return true
	}
	deadline := time.Now().Add(s.cfg.HoldTimeout)
	for {
		changed := s.node.LeaderChanged()
		err := s.node.ConsistentRead()
		if err == nil {
			return true
		}
		if errors.Is(err, cluster.ErrNotLeader) && r.Header.Get(headerForwarded) == "" {
			if addr, ok := s.node.LeaderAPI(); ok {
				if s.forward(w, r, addr, nil) {
					return false
				}
			}
		}
		if !s.hold(r.Context(), deadline, changed) {
			writeError(w, http.StatusServiceUnavailable, &fsm.Error{Code: CodeNoLeader,
				Message: fmt.Sprintf("no leader could serve a consistent read within %s", s.cfg.HoldTimeout)})
			return false
		}
	}
}

// block waits until the state's index passes idx, the wait ends, or the
// client goes away.
func (s *Server) block(ctx context.Context, idx uint64, wait time.Duration) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		ch := s.node.FSM().Watch()
		if s.node.FSM().State().Index() > idx {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// hold waits before the next attempt at a held request: until the
// leader changes (changed, taken before the attempt, so no change is
// missed) or the retry interval passes. It reports false once the
// deadline has passed.
func (s *Server) hold(ctx context.Context, deadline time.Time, changed <-chan struct{}) bool {
	if time.Now().After(deadline) {
		return false
	}
	s.held.Add(1)
	defer s.held.Add(-1)
	d := backoff.Between(s.cfg.HoldRetry, 2*s.cfg.HoldRetry)
	d = min(d, time.Until(deadline)+time.Millisecond)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-changed:
	case <-ctx.Done():
		return false
	}
	// Every held request wakes at once. Spread them over a time that
	// grows with their number (0.2 ms each, at most HoldRetry), so a
	// lone request retries at once and a new leader is not met by a
	// stampede that starves its heartbeats.
	spread := min(s.cfg.HoldRetry, time.Duration(s.held.Load()-1)*200*time.Microsecond)
	if spread <= 0 {
		return true
	}
	t.Reset(backoff.Between(0, spread))
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// forward sends the request to the leader and copies its answer back. It
// reports false, having written nothing, when the leader could not be
// reached or answered that it no longer leads; the caller retries.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, leaderAPI string, body []byte) bool {
	if s.cfg.ForwardTLSOnly && !strings.HasPrefix(leaderAPI, "https://") {
		s.cfg.Logger.Error("not forwarding to a leader without TLS: the request's token would cross the network in the clear", "leader", leaderAPI)
		return false
	}
	u := strings.TrimSuffix(leaderAPI, "/") + r.URL.RequestURI()
	req, err := http.NewRequestWithContext(r.Context(), r.Method, u, bytes.NewReader(body))
	if err != nil {
		return false
	}
	for _, h := range []string{"Authorization", "Content-Type", HeaderRequestID} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set(headerForwarded, s.node.ID())
	resp, err := s.client.Do(req)
	if err != nil {
		s.cfg.Logger.Debug("forward to leader failed; retrying", "leader", leaderAPI, "err", err)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusMisdirectedRequest {
		io.Copy(io.Discard, resp.Body)
		return false
	}
	for _, h := range []string{"Content-Type", HeaderIndex, HeaderKnownLeader, HeaderDeprecation} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.forwarded = true
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
	return true
}

// statusWriter remembers a write's answer for the metrics.
type statusWriter struct {
	http.ResponseWriter
	status    int
	code      string
	forwarded bool
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

// onLeader runs fn on the leader: here if this node leads, else by
// forwarding the request. While there is no leader, or the leader
// changes under it, the request is held and retried, with the same
// request ID, until Config.HoldTimeout has passed. fn returns
// cluster.ErrNotLeader or cluster.ErrUnknownOutcome to ask for a retry.
func (s *Server) onLeader(w http.ResponseWriter, r *http.Request, body []byte, fn func() error) {
	deadline := time.Now().Add(s.cfg.HoldTimeout)
	var last error
	for {
		changed := s.node.LeaderChanged()
		if s.node.IsLeader() {
			err := fn()
			if err == nil {
				return
			}
			if !errors.Is(err, cluster.ErrNotLeader) && !errors.Is(err, cluster.ErrUnknownOutcome) {
				s.fail(w, r, err)
				return
			}
			last = err
		} else if r.Header.Get(headerForwarded) != "" {
			// Forwarded here by a node that thought this one leads;
			// let it find the real leader.
			writeError(w, http.StatusMisdirectedRequest, &fsm.Error{Code: CodeNoLeader, Message: "not the leader"})
			return
		} else if addr, ok := s.node.LeaderAPI(); ok {
			if s.forward(w, r, addr, body) {
				return
			}
		}
		if !s.hold(r.Context(), deadline, changed) {
			e := &fsm.Error{Code: CodeNoLeader, Message: fmt.Sprintf("no leader accepted the write within %s; retry with the same %s", s.cfg.HoldTimeout, HeaderRequestID)}
			if errors.Is(last, cluster.ErrUnknownOutcome) {
				e.Code, e.Message = CodeUnknown, fmt.Sprintf("the write's outcome is unknown (leadership was lost); retry with the same %s", HeaderRequestID)
			}
			writeError(w, http.StatusServiceUnavailable, e)
			return
		}
	}
}

// WriteResult is the body of a successful write.
type WriteResult struct {
	// Index is the Raft index the write applied at.
	Index uint64 `json:"index"`
}

// write applies ops on the leader and answers with the result.
func (s *Server) write(w http.ResponseWriter, r *http.Request, body []byte, status int, ops ...*controlv1.Op) {
	reqID := r.Header.Get(HeaderRequestID)
	if reqID == "" {
		reqID = cluster.NewUUID()
		r.Header.Set(HeaderRequestID, reqID)
	} else if len(reqID) > 128 {
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Field: HeaderRequestID, Message: "is longer than 128 characters"})
		return
	}
	if err := s.checkSecretRefs(ops); err != nil {
		fail(w, err)
		return
	}
	cmd := &controlv1.Write{RequestId: reqID, Ops: ops}
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	w = sw
	defer func() {
		s.met.writeSeconds.Observe(time.Since(start).Seconds())
		outcome := "ok"
		switch {
		case sw.forwarded:
			outcome = "forwarded"
		case sw.status >= 300:
			outcome = sw.code
		}
		s.met.writes.WithLabelValues(outcome).Inc()
	}()
	s.onLeader(w, r, body, func() error {
		if err := s.checkRoutable(cmd); err != nil {
			fail(w, err)
			return nil
		}
		res, err := s.node.Apply(fsm.TypeWrite, cmd)
		if err != nil {
			return err
		}
		w.Header().Set(HeaderIndex, strconv.FormatUint(res.GetIndex(), 10))
		if err := fsm.ResultError(res); err != nil {
			fail(w, err)
			return nil
		}
		writeJSON(w, status, WriteResult{Index: res.GetIndex()})
		return nil
	})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	k, ok := kindOf(w, r)
	if !ok || !s.read(w, r) {
		return
	}
	st := s.node.FSM().State()
	b, err := encodeList(st.List(k.Name))
	if err != nil {
		fail(w, err)
		return
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(st.Index(), 10))
	writeRaw(w, http.StatusOK, b)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	k, ok := kindOf(w, r)
	if !ok || !s.read(w, r) {
		return
	}
	st := s.node.FSM().State()
	w.Header().Set(HeaderIndex, strconv.FormatUint(st.Index(), 10))
	m, ok := st.Get(k.Name, r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, &fsm.Error{Code: fsm.CodeNotFound, Field: "id", Message: fmt.Sprintf("%s %q does not exist", k.Name, r.PathValue("id"))})
		return
	}
	b, err := EncodeEntity(m)
	if err != nil {
		fail(w, err)
		return
	}
	writeRaw(w, http.StatusOK, b)
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request, k *fsm.Kind) ([]byte, proto.Message, bool) {
	body, ok := readBody(w, r, s.cfg.MaxBody)
	if !ok {
		return nil, nil, false
	}
	m, err := DecodeEntity(k, body)
	if err != nil {
		fail(w, err)
		return nil, nil, false
	}
	return body, m, true
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	k, ok := kindOf(w, r)
	if !ok {
		return
	}
	body, m, ok := s.decode(w, r, k)
	if !ok {
		return
	}
	s.write(w, r, body, http.StatusCreated, fsm.CreateOp(m))
}

func (s *Server) put(w http.ResponseWriter, r *http.Request) {
	k, ok := kindOf(w, r)
	if !ok {
		return
	}
	body, m, ok := s.decode(w, r, k)
	if !ok {
		return
	}
	if id := k.ID(m); id != r.PathValue("id") {
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Field: "id",
			Message: fmt.Sprintf("the body names %s %q but the path names %q", k.Name, id, r.PathValue("id"))})
		return
	}
	s.write(w, r, body, http.StatusOK, fsm.PutOp(m))
}

func (s *Server) del(w http.ResponseWriter, r *http.Request) {
	k, ok := kindOf(w, r)
	if !ok {
		return
	}
	s.write(w, r, nil, http.StatusOK, fsm.DeleteOp(k.Name, r.PathValue("id")))
}

// Batch is the body of POST /v1/control/batch: puts and deletes applied
// atomically.
type Batch struct {
	// Put lists entities to create or replace, each a BatchPut. The
	// deprecated flat shape, an entity's fields beside "kind", is still
	// read; see the package's API history.
	Put []json.RawMessage `json:"put,omitempty"`
	// Delete lists entities to delete.
	Delete []BatchDelete `json:"delete,omitempty"`
}

// BatchPut is one entity to create or replace: its kind, and the entity
// under "entity", so that no field of an entity can ever collide with
// the envelope's (a provider has a "kind" of its own).
type BatchPut struct {
	// Kind is the entity's kind, singular: "region", "provider", ...
	Kind string `json:"kind"`
	// Entity is the entity's JSON form, as GET returns it.
	Entity json.RawMessage `json:"entity"`
}

// BatchDelete names one entity to delete.
type BatchDelete struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// HeaderDeprecation is set on an answer to a request that used a shape
// the API will stop reading.
const HeaderDeprecation = "Deprecation"

// DecodeBatch reads a batch body into ops.
func DecodeBatch(body []byte) ([]*controlv1.Op, error) {
	ops, _, err := decodeBatch(body)
	return ops, err
}

// decodeBatch reads a batch body into ops, and reports whether any put
// used the deprecated flat shape.
func decodeBatch(body []byte) (ops []*controlv1.Op, flat bool, err error) {
	var b Batch
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, false, &fsm.Error{Code: fsm.CodeInvalid, Message: "malformed batch: " + err.Error()}
	}
	for i, raw := range b.Put {
		m, isFlat, err := decodePut(raw)
		if err != nil {
			var fe *fsm.Error
			if errors.As(err, &fe) {
				fe.Field = strings.TrimSuffix(fmt.Sprintf("put[%d].%s", i, fe.Field), ".")
			}
			return nil, false, err
		}
		flat = flat || isFlat
		ops = append(ops, fsm.PutOp(m))
	}
	for i, d := range b.Delete {
		k, ok := fsm.KindByName(d.Kind)
		if !ok {
			return nil, false, &fsm.Error{Code: fsm.CodeInvalid, Field: fmt.Sprintf("delete[%d].kind", i), Message: unknownKind(d.Kind)}
		}
		ops = append(ops, fsm.DeleteOp(k.Name, d.ID))
	}
	if len(ops) == 0 {
		return nil, false, &fsm.Error{Code: fsm.CodeInvalid, Field: "put", Message: "a batch needs at least one put or delete"}
	}
	return ops, flat, nil
}

const putShape = `a put is {"kind": "provider", "entity": {...}}`

// decodePut reads one put, in either shape. A put with an "entity" is a
// BatchPut; one without is the flat shape, which is unambiguous because
// no entity has a field named "entity", and no entity kind is also a
// provider's wire format.
func decodePut(raw json.RawMessage) (proto.Message, bool, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return nil, false, &fsm.Error{Code: fsm.CodeInvalid, Message: "must be an object; " + putShape}
	}
	var kind string
	if err := json.Unmarshal(fields["kind"], &kind); err != nil || kind == "" {
		return nil, false, &fsm.Error{Code: fsm.CodeInvalid, Field: "kind", Message: "must name the entity's kind, a string; " + putShape}
	}
	k, ok := fsm.KindByName(kind) // singular, or plural as the flat shape allowed
	if !ok {
		return nil, false, &fsm.Error{Code: fsm.CodeInvalid, Field: "kind", Message: unknownKind(kind)}
	}
	entity, wrapped := fields["entity"]
	if !wrapped {
		// The flat shape: the entity's fields beside "kind".
		delete(fields, "kind")
		rest, _ := json.Marshal(fields)
		m, err := DecodeEntity(k, rest)
		return m, true, err
	}
	for f := range fields {
		if f != "kind" && f != "entity" {
			return nil, false, &fsm.Error{Code: fsm.CodeInvalid, Field: f, Message: "unknown field; " + putShape}
		}
	}
	if t := bytes.TrimSpace(entity); len(t) == 0 || t[0] != '{' {
		return nil, false, &fsm.Error{Code: fsm.CodeInvalid, Field: "entity", Message: "must be the entity, a JSON object"}
	}
	m, err := DecodeEntity(k, entity)
	if err != nil {
		var fe *fsm.Error
		if errors.As(err, &fe) {
			fe.Field = strings.TrimSuffix("entity."+fe.Field, ".")
		}
	}
	return m, false, err
}

// unknownKind explains a kind that names no entity kind, pointing out a
// provider's wire format sent where the entity's kind belongs.
func unknownKind(kind string) string {
	names := make([]string, len(fsm.Kinds))
	for i, k := range fsm.Kinds {
		names[i] = k.Name
	}
	msg := fmt.Sprintf("unknown entity kind %q (known: %s)", kind, strings.Join(names, ", "))
	wire := []string{table.KindOpenAI, table.KindAnthropic, table.KindGemini, table.KindOllama, table.KindAzure, table.KindBedrock, table.KindVertex, table.KindLocal, table.KindPeer}
	if slices.Contains(wire, kind) {
		msg += fmt.Sprintf("; %q is a provider's wire format: %s", kind, putShape)
	}
	return msg
}

func (s *Server) batch(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, s.cfg.MaxBody)
	if !ok {
		return
	}
	ops, flat, err := decodeBatch(body)
	if err != nil {
		fail(w, err)
		return
	}
	if flat {
		w.Header().Set(HeaderDeprecation, "true")
	}
	s.write(w, r, body, http.StatusOK, ops...)
}

// JoinRequest is the body of POST /v1/control/cluster/join: the new
// node's API address. The leader asks that node for its ID and Raft
// address.
type JoinRequest struct {
	Addr string `json:"addr"`
}

func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, s.cfg.MaxBody)
	if !ok {
		return
	}
	var jr JoinRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&jr); err != nil || !strings.HasPrefix(jr.Addr, "http") {
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Field: "addr", Message: `must be the new node's API URL, "http://host:port"`})
		return
	}
	s.onLeader(w, r, body, func() error {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		self, err := fetchSelf(ctx, s.client, jr.Addr, r.Header.Get("Authorization"))
		if err != nil {
			writeError(w, http.StatusBadGateway, &fsm.Error{Code: fsm.CodeInvalid, Field: "addr", Message: err.Error()})
			return nil
		}
		if err := s.node.AddVoter(self.ID, self.RaftAddr, self.Name, self.APIAddr); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, self)
		return nil
	})
}

// fetchSelf asks a node to join who it is, with the joining admin's
// token: every node of a cluster shares its tokens, and /self needs one.
func fetchSelf(ctx context.Context, c *http.Client, addr, authorization string) (*Self, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(addr, "/")+"/v1/control/self", nil)
	if err != nil {
		return nil, fmt.Errorf("new node %s: %w", addr, err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("new node %s: %w", addr, err)
	}
	defer resp.Body.Close()
	var self Self
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("new node %s answered %s", addr, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&self); err != nil || self.ID == "" || self.RaftAddr == "" {
		return nil, fmt.Errorf("new node %s: not a Meridian control node", addr)
	}
	return &self, nil
}

func (s *Server) removePeer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.onLeader(w, r, nil, func() error {
		servers, err := s.node.Servers()
		if err != nil {
			return err
		}
		found := false
		for _, srv := range servers {
			found = found || srv.ID == id
		}
		if !found {
			// A retry of a removal whose Raft step committed but whose
			// member record was not yet dropped (the leader changed in
			// between) finishes the job rather than answering 404.
			if _, member := s.node.FSM().State().Member(id); member {
				if _, err := s.node.Apply(fsm.TypeRemoveMember, &controlv1.RemoveMember{RequestId: cluster.NewUUID(), Id: id}); err != nil {
					return err
				}
				writeJSON(w, http.StatusOK, struct {
					Removed string `json:"removed"`
				}{id})
				return nil
			}
			writeError(w, http.StatusNotFound, &fsm.Error{Code: fsm.CodeNotFound, Field: "id", Message: fmt.Sprintf("no control node %q in the cluster", id)})
			return nil
		}
		if err := s.node.RemoveServer(id); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, struct {
			Removed string `json:"removed"`
		}{id})
		return nil
	})
}

// transfer hands leadership from the leader to the most up-to-date
// other voter (a planned hand-over, before an upgrade or a restart).
func (s *Server) transfer(w http.ResponseWriter, r *http.Request) {
	s.onLeader(w, r, nil, func() error {
		from := s.node.ID()
		if err := s.node.TransferLeadership(); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, struct {
			From string `json:"from"`
		}{from})
		return nil
	})
}

// snapshotSave streams a consistent snapshot of the state, taken on the
// leader.
func (s *Server) snapshotSave(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	q.Set("consistent", "")
	r.URL.RawQuery = q.Encode()
	if !s.read(w, r) {
		return
	}
	st := s.node.FSM().State()
	w.Header().Set(HeaderIndex, strconv.FormatUint(st.Index(), 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	st.WriteTo(w)
}

func (s *Server) snapshotRestore(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, s.cfg.MaxSnapshot)
	if !ok {
		return
	}
	if _, err := fsm.ReadState(bytes.NewReader(body)); err != nil {
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Message: err.Error()})
		return
	}
	s.onLeader(w, r, body, func() error {
		if err := s.node.Restore(body); err != nil {
			return err
		}
		s.setIndex(w)
		writeJSON(w, http.StatusOK, WriteResult{Index: s.node.FSM().State().Index()})
		return nil
	})
}
