// Package node wires an edge node together: config, logger, metrics,
// gateway, API surfaces and the HTTP server, with health endpoints and
// graceful shutdown. It is the one place the edge's parts meet.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	anthropicapi "github.com/meridian-mesh/meridian/edge/api/anthropic"
	openaiapi "github.com/meridian-mesh/meridian/edge/api/openai"
	responsesapi "github.com/meridian-mesh/meridian/edge/api/responses"
	"github.com/meridian-mesh/meridian/edge/cache"
	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/engine"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/geo"
	"github.com/meridian-mesh/meridian/edge/gossip"
	"github.com/meridian-mesh/meridian/edge/jobs"
	"github.com/meridian-mesh/meridian/edge/limits"
	"github.com/meridian-mesh/meridian/edge/link"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/metrics"
	"github.com/meridian-mesh/meridian/edge/tablesync"
	"github.com/meridian-mesh/meridian/edge/usage"
	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/meridian-mesh/meridian/shared/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// Node is a running edge node.
type Node struct {
	cfg     config.Config
	log     *slog.Logger
	metrics *metrics.Metrics
	gw      *gateway.Gateway
	gossip  *gossip.Node // nil when gossip is off
	// readyMu makes "read the engine's ready set, then gossip it" one
	// step: the table's goroutine and the engine's reconciler both do
	// it, and gossip versions a set when it is handed over, not when it
	// was read, so two unserialized callers could leave the older set
	// gossiped as the newer.
	readyMu  sync.Mutex
	gossiped []string       // the ready models last gossiped; under readyMu
	engine   *engine.Engine // nil when the node runs no local engine
	srv      *http.Server
	ln       net.Listener
	handler  http.Handler
	draining atomic.Bool

	link *link.Transport // nil when links are off (link.go)

	locator *geo.Locator // where clients are (mesh.go)

	sync *tablesync.Syncer // nil without a control plane (table.go)

	id *identity // nil without a fleet identity (join.go)

	// api is what the surfaces were built from; forwarded requests and
	// the dry run use it too.
	api    *api.Config
	limits *limits.Limiter
	usage  *usage.Recorder // nil when the edge records no usage
	cache  *cache.Store    // nil when the cache is off

	jobs *jobs.Service // the batch APIs and workers (jobs.go)

	tracing *telemetry.Tracing // nil when tracing is off
}

// New builds a node from a validated config. It does not listen yet.
func New(cfg config.Config, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", cfg.NodeID)
	m := metrics.New()
	n := &Node{cfg: cfg, log: log, metrics: m}
	var err error
	if cfg.Local.Enabled {
		lc := cfg.Local
		lc.Registerer = m.Registerer()
		if n.engine, err = engine.New(lc, log); err != nil {
			return nil, err
		}
	}
	if cfg.Control.Identity() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		n.id, err = loadIdentity(ctx, cfg, log)
		cancel()
		if err != nil {
			return nil, err
		}
		err = m.Registerer().Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_identity_cert_expiry_timestamp_seconds",
			Help: "When this node's certificate expires, Unix seconds; renewal runs at half its life."},
			func() float64 { return float64(n.id.expiry().Unix()) }))
		if err != nil {
			return nil, fmt.Errorf("identity metrics: %w", err)
		}
	}
	if n.link, err = newLink(cfg, log, m, n.peerDown, n.id, n.authorizePeer); err != nil {
		return nil, err
	}
	if n.locator, err = geo.New(cfg.Geo, geo.Point{}); err != nil {
		return nil, err
	}
	gc := gateway.DefaultConfig()
	gc.Logger, gc.Metrics, gc.Registerer = log, m, m.Registerer()
	gc.NewProvider, gc.Router = n.newProvider, n.newRouter()
	gc.FailoverBudget, gc.PeerTTFBFloor = cfg.Routing.FailoverBudget, cfg.Routing.PeerTTFBFloor
	if n.tracing, err = telemetry.Start(cfg.Telemetry, "meridian-edge", cfg.NodeID, cfg.Region); err != nil {
		return nil, err
	}
	gc.Tracer = n.tracing.Tracer("github.com/meridian-mesh/meridian/edge/gateway")
	if n.engine != nil {
		gc.Local = n.engine
		n.engine.OnChange(n.readyChanged)
	}
	if n.link != nil {
		gc.Peer = n.peerTarget
	}
	if err := gc.Validate(); err != nil {
		return nil, err
	}
	n.gw = gateway.New(gc)
	gw := n.gw
	if err = n.seedTable(); err != nil {
		return nil, fmt.Errorf("static table: %w", err)
	}

	n.logAuth()

	lc := limits.DefaultConfig()
	lc.Node, lc.Interval, lc.Logger = cfg.NodeID, cfg.Usage.LimitsInterval, log.With("component", "limits")
	if n.limits, err = limits.New(lc); err != nil {
		return nil, err
	}
	if cfg.Records() {
		uc := usage.DefaultConfig()
		uc.Node, uc.Dir, uc.QueueSize = cfg.NodeID, cfg.UsageDir(), cfg.Usage.QueueSize
		uc.Logger, uc.Registerer = log.With("component", "usage"), m.Registerer()
		if n.usage, err = usage.New(uc); err != nil {
			return nil, err
		}
	}

	if cfg.Cache.Enabled() {
		if n.cache, err = newCache(cfg.Cache, m); err != nil {
			return nil, err
		}
	}

	mux := http.NewServeMux()
	surface := api.DefaultConfig()
	surface.Gateway, surface.Metrics, surface.Logger = gw, m, log
	surface.MaxBodyBytes, surface.BodyReadTimeout = cfg.MaxBodyBytes, cfg.BodyReadTimeout
	surface.KeepAlive, surface.StreamWriteTimeout = cfg.StreamKeepAlive, cfg.StreamWriteTimeout
	surface.Admission = api.NewAdmission(cfg.MaxInFlight)
	surface.NoAuth = n.authMode() == config.AuthNone
	surface.Limits, surface.Node, surface.Region = n.limits, cfg.NodeID, cfg.Region
	if n.usage != nil {
		surface.Usage = n.usage
	}
	surface.Cache = n.cache
	surface.Tracer = n.tracing.Tracer("github.com/meridian-mesh/meridian/edge/api")
	if n.cache != nil && cfg.Cache.SemanticModel != "" {
		surface.Semantic, surface.SemanticModel = cache.NewSemantic(cfg.Cache.SemanticMaxVectors), cfg.Cache.SemanticModel
	}
	if err := surface.Validate(); err != nil {
		return nil, err
	}
	n.api = &surface
	if err := n.newJobs(mux); err != nil {
		return nil, err
	}
	oai, anth := openaiapi.New(surface), anthropicapi.New(surface)
	oai.Register(mux)
	anth.Register(mux)
	responsesapi.New(surface).Register(mux)
	// Both SDKs list models at /v1/models; Anthropic's send
	// anthropic-version, so that header picks the answer's shape.
	mux.HandleFunc("/v1/models", byClientFormat(oai.Models, anth.Models))
	mux.HandleFunc("/v1/models/{id...}", byClientFormat(oai.Model, anth.Model))
	if cfg.Gossip.Enabled {
		if cfg.Gossip.QUICAddr == "" && n.link != nil {
			// Peers dial links where gossip says they are. Unset, that
			// is the advertised address with the port the link bound,
			// which "port 0" only decides now.
			_, port, _ := net.SplitHostPort(n.link.Addr().String())
			cfg.Gossip.QUICAddr = net.JoinHostPort(cfg.Gossip.Advertise, port)
		}
		if n.gossip, err = newGossip(cfg, log); err != nil {
			return nil, err
		}
		if err := m.Registerer().Register(gossip.Collector(n.gossip)); err != nil {
			return nil, fmt.Errorf("gossip metrics: %w", err)
		}
		n.publishTable()
		mux.HandleFunc("/v1/meridian/members", n.gossip.HandleMembers)
	} else {
		mux.HandleFunc("/v1/meridian/members", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"members":[],"gossip":"disabled"}` + "\n"))
		})
	}
	mux.HandleFunc("GET /v1/meridian/route", n.route)
	mux.HandleFunc("POST /v1/meridian/route", n.route)
	mux.HandleFunc("GET /v1/meridian/links", n.links)
	mux.HandleFunc("GET /healthz", n.healthz)
	mux.HandleFunc("GET /readyz", n.readyz)
	mux.Handle("GET /metrics", m.Handler())
	n.handler = n.wrap(n.asyncFirst(mux))
	n.srv = &http.Server{
		Handler:           n.handler,
		ReadHeaderTimeout: 10 * time.Second,
		// No ReadTimeout or WriteTimeout: they would cut long streams.
		// The body read has its own deadline (BodyReadTimeout) and
		// upstream silence is bounded by each provider's chunk timeout.
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return n, nil
}

// newGossip builds the node's gossip member from its config.
func newGossip(cfg config.Config, log *slog.Logger) (*gossip.Node, error) {
	keys, err := cfg.Gossip.DecodedKeys()
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(cfg.Gossip.Bind)
	if err != nil {
		return nil, fmt.Errorf("gossip.bind: %w", err)
	}
	gc := gossip.DefaultConfig()
	gc.NodeID, gc.Region, gc.QUICAddr = cfg.NodeID, cfg.Region, cfg.Gossip.QUICAddr
	gc.Profile = gossip.Profile(cfg.Gossip.Profile)
	gc.Label = cfg.Gossip.Cluster
	gc.Keys = keys
	gc.BindAddr = host
	gc.BindPort, _ = strconv.Atoi(port)
	gc.AdvertiseAddr = cfg.Gossip.Advertise
	gc.Seeds = cfg.Gossip.Seeds
	g, err := gossip.New(gc, log) // it names itself: component=gossip
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	return g, nil
}

// publishTable tells the fleet which models this node's engine serves
// and which table revision it applied.
func (n *Node) publishTable() {
	n.gossipReady()
	n.gossip.SetTableRevision(n.gw.Table().Revision())
}

// reportLoad gossips the requests in flight, and how many wait for the
// local engine, every few seconds, with jitter, until stop closes.
func (n *Node) reportLoad(stop <-chan struct{}) {
	var last gossip.Load
	for first := true; ; first = false {
		d := backoff.Between(2*time.Second, 3*time.Second)
		select {
		case <-stop:
			return
		case <-time.After(d):
		}
		l := gossip.Load{InFlight: int(n.metrics.RequestsInFlight())}
		if n.engine != nil {
			l.QueueDepth = n.engine.Stats().Queued
		}
		l.Class = uint8(min(l.InFlight+l.QueueDepth, 255))
		if !first && l == last {
			continue // unchanged: nothing to spread
		}
		last = l
		n.gossip.SetLoad(l)
	}
}

// Gossip returns the node's gossip member, nil when gossip is off.
func (n *Node) Gossip() *gossip.Node { return n.gossip }

// Engine returns the node's local engine, nil when it runs none.
func (n *Node) Engine() *engine.Engine { return n.engine }

// Gateway returns the node's gateway, for callers that swap its table.
func (n *Node) Gateway() *gateway.Gateway { return n.gw }

// Handler returns the node's HTTP handler, middleware included.
func (n *Node) Handler() http.Handler { return n.handler }

// Listen opens the API listener on the configured address.
func (n *Node) Listen() error {
	ln, err := net.Listen("tcp", n.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", n.cfg.Listen, err)
	}
	n.ln = newLimitListener(ln, n.cfg.MaxConnections)
	return nil
}

// Addr returns the listener's address, once Listen has run.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// Run serves until ctx ends, then drains: it stops accepting, marks the
// node not ready, lets in-flight requests and streams finish within the
// drain timeout and closes what is left.
func (n *Node) Run(ctx context.Context) error {
	if n.ln == nil {
		if err := n.Listen(); err != nil {
			return err
		}
	}
	if n.engine != nil {
		n.engine.Start()
		defer n.engine.Stop() // after the drain below: streams finish first
	}
	if err := n.serveLink(); err != nil {
		return err
	}
	defer n.closeLink() // after the drain below
	if n.id != nil {
		rctx, stopRenew := context.WithCancel(ctx)
		defer stopRenew()
		go n.id.renewLoop(rctx)
	}
	stopTable, terr := n.startTable(ctx)
	if terr != nil {
		return terr
	}
	defer stopTable()
	stopUsage, uerr := n.startUsage()
	if uerr != nil {
		return uerr
	}
	defer stopUsage() // after the drain: the last records are spooled
	stopJobs, jerr := n.startJobs()
	if jerr != nil {
		return jerr
	}
	defer stopJobs() // before usage stops: a line's record is spooled
	errc := make(chan error, 1)
	go func() { errc <- n.srv.Serve(n.ln) }()
	if n.gossip != nil {
		if joined, err := n.gossip.Join(); err != nil {
			// Not fatal: the node rejoins its seeds periodically.
			n.log.Warn("gossip: no seed answered yet", "seeds", n.cfg.Gossip.Seeds, "err", err)
		} else {
			n.log.Info("gossip: joined", "answered", joined, "addr", n.gossip.Addr())
		}
		stopLoad := make(chan struct{})
		defer close(stopLoad)
		go n.reportLoad(stopLoad)
		go n.followMembers(stopLoad)
	}
	n.log.Info("edge ready", "addr", n.ln.Addr().String(), "region", n.cfg.Region, "models", len(n.cfg.Table.Models), "auth", n.authMode())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	n.draining.Store(true)
	n.log.Info("draining", "timeout", n.cfg.DrainTimeout)
	if n.gossip != nil {
		n.gossip.SetDraining(true) // peers stop sending here while in-flight work ends
	}
	dctx, cancel := context.WithTimeout(context.Background(), n.cfg.DrainTimeout)
	defer cancel()
	err := n.srv.Shutdown(dctx)
	if errors.Is(err, context.DeadlineExceeded) {
		n.log.Warn("drain timeout passed; closing remaining connections")
		err = n.srv.Close()
	}
	n.gw.Close()
	if n.gossip != nil {
		if gerr := n.gossip.Close(); gerr != nil {
			n.log.Warn("gossip: leave", "err", gerr)
		}
	}
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if terr := n.tracing.Shutdown(sctx); terr != nil {
		n.log.Warn("telemetry: spans not sent", "err", terr)
	}
	n.log.Info("stopped")
	return err
}

// reasonNoKeys is /readyz's reason when auth is on and no key exists.
const reasonNoKeys = "auth: keys mode but the routing table has no keys"

// authMode is the auth mode in force: config.AuthKeys or AuthNone.
func (n *Node) authMode() string {
	mode, _ := n.cfg.AuthMode()
	return mode
}

// logAuth says at start how clients are authenticated, loudly when they
// are not.
func (n *Node) logAuth() {
	mode, derived := n.cfg.AuthMode()
	switch {
	case mode == config.AuthNone && derived:
		n.log.Warn("auth: none: this edge accepts every request without an API key, because it is standalone and lists no keys; set auth: keys, or list keys, before exposing it")
	case mode == config.AuthNone:
		n.log.Warn("auth: none (set in the config): this edge accepts every request without an API key")
	case n.sync == nil && !n.gw.Table().HasKeys():
		n.warnNoKeys() // a control plane's tables warn as they apply
	default:
		n.log.Info("auth: keys", "derived", derived)
	}
}

// warnNoKeys says why an edge in auth mode keys refuses everyone.
func (n *Node) warnNoKeys() {
	n.log.Warn("auth: keys mode but the routing table has no keys: every request gets 401 and /readyz says not ready until a key is added",
		"table_revision", n.gw.Table().Revision())
}

func (n *Node) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"status":"ok"}` + "\n"))
}

// Readiness is the body of /readyz.
type Readiness struct {
	Ready         bool   `json:"ready"`
	Node          string `json:"node"`
	Region        string `json:"region"`
	Draining      bool   `json:"draining"`
	TableRevision uint64 `json:"table_revision"`
	Models        int    `json:"models"`
	// Auth is the auth mode in force, "keys" or "none".
	Auth   string `json:"auth"`
	Reason string `json:"reason,omitempty"`
	// Local is the local engine's state, when the node runs one.
	Local *LocalStatus `json:"local,omitempty"`
	// Table is the routing table's source and freshness, when the node
	// follows a control plane. A stale table still serves.
	Table *tablesync.Status `json:"table,omitempty"`
	// Identity is the node certificate's state, when the node joined
	// the fleet (control.api_url).
	Identity *IdentityStatus `json:"identity,omitempty"`
}

func (n *Node) readyz(w http.ResponseWriter, r *http.Request) {
	tab := n.gw.Table()
	rd := Readiness{
		Node: n.cfg.NodeID, Region: n.cfg.Region, Draining: n.draining.Load(),
		TableRevision: tab.Revision(), Models: len(tab.Models()), Auth: n.authMode(),
	}
	if n.sync != nil {
		st := n.sync.Status()
		rd.Table = &st
	}
	if n.id != nil {
		st := n.id.status()
		rd.Identity = &st
	}
	local, localReady := n.localStatus()
	rd.Local = local
	switch {
	case rd.Draining:
		rd.Reason = "draining"
	case rd.Models == 0:
		rd.Reason = "routing table has no models"
	case rd.Auth == config.AuthKeys && !tab.HasKeys():
		// It would refuse every request (api.ErrNoKeys): an edge that
		// can authenticate nobody takes no traffic from the balancer.
		rd.Reason = reasonNoKeys
	case !localReady && !local.Up:
		rd.Reason = "local engine is not up"
	case !localReady:
		rd.Reason = "local models not ready: " + strings.Join(local.NotReady, ", ")
	default:
		rd.Ready = true
	}
	w.Header().Set("Content-Type", "application/json")
	if !rd.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(rd)
}

// wrap adds what every response needs: a request ID, route and overhead
// headers, and panic recovery.
func (n *Node) wrap(h http.Handler) http.Handler {
	localRoute := "target=edge/" + n.cfg.NodeID + "; reason=local"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &responseWriter{ResponseWriter: w, start: time.Now(), route: localRoute}
		// A stream on this connection may have left a write deadline
		// (api.StreamWriter); it must not cut this answer.
		http.NewResponseController(w).SetWriteDeadline(time.Time{})
		id := r.Header.Get(api.HeaderRequestID)
		if !validRequestID(id) {
			id = newRequestID()
			r.Header.Set(api.HeaderRequestID, id)
		}
		w.Header().Set(api.HeaderRequestID, id)
		// The request's one table: this header, its key check and its
		// plan all read this snapshot (the client carries it).
		cl := n.client(r)
		cl.Snapshot = n.gw.Snapshot()
		w.Header().Set(HeaderTableRevision, n.tableRevisionHeader(cl.Snapshot.Table()))
		r = r.WithContext(gateway.WithClient(r.Context(), cl))
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				n.log.Error("handler panic", "request_id", id, "panic", fmt.Sprint(v))
				if !rw.wrote {
					writeError(rw, r, &llm.Error{Status: http.StatusInternalServerError, Type: llm.TypeServer, Message: "internal error"})
				}
			}
		}()
		h.ServeHTTP(rw, r)
	})
}

// writeError writes e in the client's format: Anthropic's for its
// SDKs (anthropic-version) and its path, OpenAI's for everyone else.
func writeError(w http.ResponseWriter, r *http.Request, e *llm.Error) {
	if r.Header.Get("Anthropic-Version") != "" || r.URL.Path == "/v1/messages" || strings.HasPrefix(r.URL.Path, "/v1/messages/") {
		anthropicapi.WriteError(w, r, e)
		return
	}
	openaiapi.WriteError(w, e)
}

// byClientFormat serves Anthropic's clients with anthropic and everyone
// else with openai.
func byClientFormat(openai, anthropic http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Anthropic-Version") != "" {
			anthropic(w, r)
			return
		}
		openai(w, r)
	}
}

// validRequestID accepts a client's request ID if it is short and
// printable, so it is safe to log and echo.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}

// responseWriter fills in the route and overhead headers for responses
// whose handler did not set them, such as /healthz and /v1/models.
type responseWriter struct {
	http.ResponseWriter
	start time.Time
	route string
	wrote bool
}

func (w *responseWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		h := w.Header()
		if _, ok := h[api.HeaderRoute]; !ok {
			h.Set(api.HeaderRoute, w.route)
		}
		if _, ok := h[api.HeaderOverhead]; !ok {
			h.Set(api.HeaderOverhead, fmt.Sprint(time.Since(w.start).Microseconds()))
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Flush supports streaming through http.ResponseController.
func (w *responseWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// startUsage starts the exchange of limit reports and the delivery of
// usage records over the control bus, when the edge follows a control
// plane; a standalone edge enforces limits alone and keeps its records
// in the spool. stop ends both, spooling what is queued.
func (n *Node) startUsage() (stop func(), err error) {
	var nc *nats.Conn
	if n.sync != nil {
		nc = n.sync.Conn()
	}
	if nc != nil {
		if err := n.limits.Start(nc); err != nil {
			return nil, err
		}
	}
	if n.usage != nil {
		if err := n.usage.Start(nc); err != nil {
			n.limits.Close()
			return nil, err
		}
	}
	return func() {
		n.limits.Close()
		if n.usage != nil {
			n.usage.Close()
		}
	}, nil
}

// newCache builds the node's answer cache and its metrics.
func newCache(cfg config.Cache, m *metrics.Metrics) (*cache.Store, error) {
	cc := cache.DefaultConfig()
	cc.MaxBytes, cc.MaxEntryBytes, cc.DefaultTTL = cfg.MaxBytes, cfg.MaxEntryBytes, cfg.DefaultTTL
	st, err := cache.New(cc)
	if err != nil {
		return nil, err
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_cache_hits_total", Help: "Requests answered from this edge's cache."},
			func() float64 { return float64(st.Stats().Hits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meridian_cache_misses_total", Help: "Cacheable requests this edge's cache could not answer."},
			func() float64 { return float64(st.Stats().Misses) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_cache_bytes", Help: "Bytes the cached answers count against cache.max_bytes."},
			func() float64 { return float64(st.Stats().Bytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_cache_entries", Help: "Answers in this edge's cache."},
			func() float64 { return float64(st.Stats().Entries) }),
	} {
		if err := m.Registerer().Register(c); err != nil {
			st.Close()
			return nil, fmt.Errorf("cache metrics: %w", err)
		}
	}
	return st, nil
}
