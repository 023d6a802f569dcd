package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/link"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/metrics"
	"github.com/meridian-mesh/meridian/edge/provider"
	"github.com/meridian-mesh/meridian/shared/pki"
)

// newLink opens the node's link transport when links are enabled. It
// dials at once; it serves peers only from Run.
//
// With a fleet identity the certificate and CA come from it, the
// certificate follows its renewals, and only peers the current table
// lists, unrevoked, are accepted (authorize).
func newLink(cfg config.Config, log *slog.Logger, m *metrics.Metrics, down func(node string, cause error), id *identity, authorize func(string, *x509.Certificate) error) (*link.Transport, error) {
	lc := cfg.Link
	if !lc.Enabled {
		return nil, nil
	}
	c := link.DefaultConfig()
	if id != nil {
		c.NodeID, c.CAs, c.Authorize = cfg.NodeID, id.ca, authorize
		c.GetCertificate = func() (*tls.Certificate, error) { return id.current(), nil }
		return listenLink(cfg, c, log, m, down)
	}
	cert, err := tls.LoadX509KeyPair(lc.CertFile, lc.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("link: node certificate: %w", err)
	}
	// Peers dial this node by its node ID and check it against the
	// certificate; a mismatch would make every link fail later, so
	// refuse it now.
	if cn := cert.Leaf.Subject.CommonName; cn != cfg.NodeID {
		return nil, fmt.Errorf("link: %s is for node %q, but this node is %q", lc.CertFile, cn, cfg.NodeID)
	}
	cas, err := pki.LoadPool(lc.CAFile)
	if err != nil {
		return nil, fmt.Errorf("link: cluster CA: %w", err)
	}
	c.NodeID, c.Certificate, c.CAs = cfg.NodeID, cert, cas
	return listenLink(cfg, c, log, m, down)
}

func listenLink(cfg config.Config, c link.Config, log *slog.Logger, m *metrics.Metrics, down func(node string, cause error)) (*link.Transport, error) {
	lc := cfg.Link
	c.MaxHops, c.KeepAlivePeriod, c.MaxIdleTimeout, c.ReplayWindow = lc.MaxHops, lc.KeepAlive, lc.IdleTimeout, lc.ReplayWindow
	c.PingInterval, c.PingMisses = lc.PingInterval, lc.PingMisses
	c.Logger = log.With("component", "link")
	c.OnPeerDown = down
	c.Caller = linkCaller
	c.Registerer = m.Registerer()
	return link.Listen(c, lc.Listen)
}

var _ provider.Provider = (*link.Peer)(nil)

// serveForwarded runs a request a peer forwarded here through this
// node's gateway. The link put the hop count in ctx, so a peer target
// here refuses to forward it further once the limit is reached.
//
// A peer that forwards a request here has routed it already: it never
// hops onwards, and the residency policy it carries still applies.
//
// The tenant and key the peer authenticated come with the request
// (link.CallerFrom): this node records the request's usage under them,
// and the peer records nothing.
func (n *Node) serveForwarded(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	caller := link.CallerFrom(ctx)
	cl := &gateway.Client{Forwarded: true, Tenant: caller.Tenant, Key: caller.Key}
	return n.api.Forwarded(gateway.WithClient(ctx, cl), cl, caller.Via, req)
}

// linkCaller names the tenant and key a request is forwarded for.
func linkCaller(ctx context.Context) link.Caller {
	if cl := gateway.ClientFrom(ctx); cl != nil {
		return link.Caller{Tenant: cl.Tenant, Key: cl.Key}
	}
	return link.Caller{}
}

// serveLink starts accepting peers' links, when links are on.
func (n *Node) serveLink() error {
	if n.link == nil {
		return nil
	}
	if err := n.link.Serve(n.serveForwarded); err != nil {
		return err
	}
	n.log.Info("link: serving", "addr", n.link.Addr().String())
	return nil
}

// closeLink closes every link; peers see a clean close and fail over.
func (n *Node) closeLink() {
	if n.link == nil {
		return
	}
	if err := n.link.Close(); err != nil && !errors.Is(err, link.ErrClosed) {
		n.log.Warn("link: close", "err", err)
	}
}

// Link returns the node's link transport, nil when links are off.
func (n *Node) Link() *link.Transport { return n.link }

// links serves GET /v1/meridian/links: each peer link and whether it is up.
func (n *Node) links(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Enabled bool             `json:"enabled"`
		Addr    string           `json:"addr,omitempty"`
		Links   []link.LinkState `json:"links"`
	}{Links: []link.LinkState{}}
	if n.link != nil {
		out.Enabled, out.Addr, out.Links = true, n.link.Addr().String(), n.link.Links()
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// authorizePeer accepts a link peer the current table lists and has not
// revoked, with a certificate issued since its latest join (the CA
// backdates certificates by pki.ClockSkew).
func (n *Node) authorizePeer(node string, cert *x509.Certificate) error {
	nd, ok := n.gw.Table().Node(node)
	switch {
	case !ok:
		return fmt.Errorf("node %s is not in the routing table", node)
	case nd.Revoked:
		return fmt.Errorf("node %s is revoked", node)
	case cert != nil && !nd.Joined.IsZero() && cert.NotBefore.Add(pki.ClockSkew).Before(nd.Joined.Add(-time.Second)):
		return fmt.Errorf("node %s's certificate predates its latest join", node)
	}
	return nil
}
