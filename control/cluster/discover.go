package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/shared/backoff"
)

// Voter discovery (-bootstrap-expect): every voter of a new cluster serves
// its identity at SelfPath and asks the others for theirs until it knows
// the expected number; each then bootstraps with the same list, sorted
// by ID, so all of them write the same first configuration. A voter that
// found the others first already serves the real API at SelfPath, which
// wants a token: every voter has the same admin tokens.

// SelfPath is where a control node says who it is, during discovery and
// in the management API.
const SelfPath = "/v1/control/self"

// codeNoLeader is the management API's error code for "no leader yet"
// (control/api's CodeNoLeader): clients hold and retry.
const codeNoLeader = "no_leader"

// Self is what a control node says of itself at SelfPath.
type Self struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
}

// DiscoverConfig configures Discover.
type DiscoverConfig struct {
	// Self is this voter: its ID (LoadOrCreateID), name and Raft and API
	// addresses.
	Self Self
	// Expect is the number of voters to find, this one included.
	Expect int
	// Join are the other voters' API base URLs; "host:port" means http.
	Join []string
	// Token is sent as a bearer token, for voters already serving the
	// real API.
	Token string
	// Listener is where Self is served until Discover returns; it is
	// closed then, so the real API can listen on the same address.
	Listener net.Listener
	// Client asks the other voters. Nil means http.DefaultClient.
	Client *http.Client
	// Interval is the time between rounds of asking, jittered down to
	// half of it. Default 1s.
	Interval time.Duration
	// RequestTimeout bounds one question to one voter. Default 2s.
	RequestTimeout time.Duration
	// Logger receives progress. Nil means slog.Default.
	Logger *slog.Logger
}

// DefaultDiscoverConfig returns the timings described on DiscoverConfig.
func DefaultDiscoverConfig() DiscoverConfig {
	return DiscoverConfig{Interval: time.Second, RequestTimeout: 2 * time.Second}
}

// Validate reports what Discover cannot run without.
func (c *DiscoverConfig) Validate() error {
	var errs []error
	if c.Self.ID == "" || c.Self.RaftAddr == "" {
		errs = append(errs, errors.New("cluster: discovery: Self needs an ID and a Raft address"))
	}
	if c.Expect < 1 {
		errs = append(errs, fmt.Errorf("cluster: discovery: Expect must be at least 1, got %d", c.Expect))
	}
	if c.Expect > 1 && len(c.Join) == 0 {
		errs = append(errs, fmt.Errorf("cluster: discovery: %d voters expected, but Join lists none", c.Expect))
	}
	if c.Listener == nil {
		errs = append(errs, errors.New("cluster: discovery: Listener is required"))
	}
	if c.Interval <= 0 || c.RequestTimeout <= 0 {
		errs = append(errs, errors.New("cluster: discovery: Interval and RequestTimeout must be positive"))
	}
	return errors.Join(errs...)
}

// DiscoveryHandler serves self at SelfPath and, on every other path, a
// 503 with the API's no-leader code: until the cluster forms there is
// no leader, and clients hold and retry.
func DiscoveryHandler(self Self, expect int) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+SelfPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(self)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `{"error":{"code":%q,"message":"waiting for %d voters to bootstrap"}}`+"\n", codeNoLeader, expect)
	})
	return mux
}

// Discover serves cfg.Self on cfg.Listener while it asks the voters in
// cfg.Join for theirs, until it knows cfg.Expect voters or ctx ends. It
// returns them sorted by ID, the bootstrap list every voter computes
// alike, and closes the listener.
func Discover(ctx context.Context, cfg DiscoverConfig) ([]Peer, error) {
	if err := cfg.Validate(); err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, err
	}
	if cfg.Client == nil {
		cfg.Client = http.DefaultClient
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	srv := &http.Server{Handler: DiscoveryHandler(cfg.Self, cfg.Expect), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(cfg.Listener)
	defer srv.Close() // closes the listener too

	found := map[string]Self{cfg.Self.ID: cfg.Self}
	for len(found) < cfg.Expect {
		for _, addr := range cfg.Join {
			if s, ok := askSelf(ctx, cfg, addr); ok {
				found[s.ID] = s
			}
		}
		if len(found) >= cfg.Expect {
			break
		}
		cfg.Logger.Info("waiting for voters", "found", len(found), "expect", cfg.Expect)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff.Between(cfg.Interval/2, cfg.Interval)):
		}
	}
	peers := make([]Peer, 0, len(found))
	for id, s := range found {
		peers = append(peers, Peer{ID: id, Addr: s.RaftAddr, APIAddr: s.APIAddr, Name: s.Name})
	}
	slices.SortFunc(peers, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) })
	return peers, nil
}

// askSelf asks the voter at addr who it is; ok is false when it did not
// answer with an ID and a Raft address.
func askSelf(ctx context.Context, cfg DiscoverConfig, addr string) (s Self, ok bool) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(addr, "/")+SelfPath, nil)
	if err != nil {
		return Self{}, false
	}
	if cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.Token)
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return Self{}, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Self{}, false
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 64<<10)).Decode(&s); err != nil || s.ID == "" || s.RaftAddr == "" {
		return Self{}, false
	}
	return s, true
}
