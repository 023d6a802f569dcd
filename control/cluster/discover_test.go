package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"github.com/meridian-mesh/meridian/shared/testkit/wanterr"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func listenLocal(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func discoverConfig(self Self, expect int, ln net.Listener, join ...string) DiscoverConfig {
	c := DefaultDiscoverConfig()
	c.Self, c.Expect, c.Listener, c.Join = self, expect, ln, join
	c.Interval, c.Logger = 50*time.Millisecond, quietLogger()
	return c
}

// TestDiscover: three voters, each knowing only the others' API
// addresses, find each other and compute the same bootstrap list.
func TestDiscover(t *testing.T) {
	const n = 3
	lns := make([]net.Listener, n)
	urls := make([]string, n)
	for i := range n {
		lns[i] = listenLocal(t)
		urls[i] = "http://" + lns[i].Addr().String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		peers []Peer
		err   error
	}
	results := make(chan result, n)
	for i := range n {
		self := Self{ID: fmt.Sprintf("id-%d", n-i), Name: fmt.Sprintf("ctl-%d", i), RaftAddr: fmt.Sprintf("10.0.0.%d:7000", i), APIAddr: urls[i]}
		var join []string
		for j := range n {
			if j != i {
				// One as host:port, which means http.
				join = append(join, strings.TrimPrefix(urls[j], map[bool]string{true: "http://"}[j == 0]))
			}
		}
		cfg := discoverConfig(self, n, lns[i], join...)
		addr := lns[i].Addr().String()
		go func() {
			peers, err := Discover(ctx, cfg)
			if err == nil {
				// The address is free again: the node's real API takes it
				// and answers the voters still asking (here a stand-in).
				var ln net.Listener
				if ln, err = net.Listen("tcp", addr); err == nil {
					srv := &http.Server{Handler: DiscoveryHandler(self, n)}
					go srv.Serve(ln)
					t.Cleanup(func() { srv.Close() })
				}
			}
			results <- result{peers, err}
		}()
	}
	want := []Peer{
		{ID: "id-1", Addr: "10.0.0.2:7000", APIAddr: urls[2], Name: "ctl-2"},
		{ID: "id-2", Addr: "10.0.0.1:7000", APIAddr: urls[1], Name: "ctl-1"},
		{ID: "id-3", Addr: "10.0.0.0:7000", APIAddr: urls[0], Name: "ctl-0"},
	}
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if !slices.Equal(r.peers, want) {
			t.Fatalf("peers %+v, want %+v", r.peers, want)
		}
	}
}

// TestDiscoverAsksWithToken: a voter that formed the cluster already
// serves the real API, which wants a token; Discover sends it and takes
// that voter's answer. Answers without an ID or a Raft address, and
// errors, are not voters.
func TestDiscoverAsksWithToken(t *testing.T) {
	real := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != SelfPath || r.Header.Get("Authorization") != "Bearer admin-token" {
			http.Error(w, `{"error":{"code":"unauthorized"}}`, http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(Self{ID: "b", RaftAddr: "10.0.0.2:7000"})
	}))
	defer real.Close()
	partial := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(Self{ID: "c"}) // no Raft address
	}))
	defer partial.Close()
	cfg := discoverConfig(Self{ID: "a", RaftAddr: "10.0.0.1:7000"}, 2, listenLocal(t), partial.URL, real.URL)
	cfg.Token = "admin-token"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	peers, err := Discover(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := []Peer{{ID: "a", Addr: "10.0.0.1:7000"}, {ID: "b", Addr: "10.0.0.2:7000"}}
	if !slices.Equal(peers, want) {
		t.Fatalf("peers %+v, want %+v", peers, want)
	}
}

// TestDiscoverEndsWithContext: a voter that never finds the others stops
// when its context ends, and frees its address.
func TestDiscoverEndsWithContext(t *testing.T) {
	dead := listenLocal(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	ln := listenLocal(t)
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Discover(ctx, discoverConfig(Self{ID: "a", RaftAddr: "10.0.0.1:7000"}, 2, ln, deadAddr))
		done <- err
	}()
	// Meanwhile it says who it is, and that there is no leader yet.
	var self Self
	wait.For(t, 10*time.Second, "an answer at "+SelfPath, func() error {
		resp, err := http.Get("http://" + addr + SelfPath)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&self)
	})
	if self.ID != "a" || self.RaftAddr != "10.0.0.1:7000" {
		t.Fatalf("self %+v", self)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Discover returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Discover did not return when its context ended")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still listening after Discover returned")
	}
}

func TestDiscoveryHandler(t *testing.T) {
	h := DiscoveryHandler(Self{ID: "a", Name: "ctl-a", RaftAddr: "10.0.0.1:7000", APIAddr: "http://10.0.0.1:8080"}, 3)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, SelfPath, nil))
	if got := strings.TrimSpace(rec.Body.String()); rec.Code != 200 || got != `{"id":"a","name":"ctl-a","raft_addr":"10.0.0.1:7000","api_addr":"http://10.0.0.1:8080"}` {
		t.Fatalf("%s: %d %s", SelfPath, rec.Code, got)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/control/providers", strings.NewReader("{}")))
	var e struct {
		Error struct{ Code, Message string }
	}
	body, _ := io.ReadAll(rec.Body)
	if err := json.Unmarshal(body, &e); err != nil || rec.Code != http.StatusServiceUnavailable || e.Error.Code != codeNoLeader || !strings.Contains(e.Error.Message, "3 voters") {
		t.Fatalf("another path: %d %s (%v)", rec.Code, body, err)
	}
}

func TestDiscoverConfigValidate(t *testing.T) {
	ln := listenLocal(t)
	defer ln.Close()
	cases := []struct {
		name string
		edit func(*DiscoverConfig)
		want string // "" means valid
	}{
		{"valid", func(*DiscoverConfig) {}, ""},
		{"alone", func(c *DiscoverConfig) { c.Expect, c.Join = 1, nil }, ""},
		{"no ID", func(c *DiscoverConfig) { c.Self.ID = "" }, "Self needs an ID"},
		{"no Raft address", func(c *DiscoverConfig) { c.Self.RaftAddr = "" }, "Self needs an ID and a Raft address"},
		{"expect none", func(c *DiscoverConfig) { c.Expect = 0 }, "Expect must be at least 1"},
		{"nobody to ask", func(c *DiscoverConfig) { c.Join = nil }, "Join lists none"},
		{"no listener", func(c *DiscoverConfig) { c.Listener = nil }, "Listener is required"},
		{"no interval", func(c *DiscoverConfig) { c.Interval = 0 }, "must be positive"},
		{"no request timeout", func(c *DiscoverConfig) { c.RequestTimeout = -time.Second }, "must be positive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := discoverConfig(Self{ID: "a", RaftAddr: "10.0.0.1:7000"}, 3, ln, "127.0.0.1:1", "127.0.0.1:2")
			tc.edit(&c)
			wanterr.Contains(t, c.Validate(), tc.want)
		})
	}
}
