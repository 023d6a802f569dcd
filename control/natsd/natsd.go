// Package natsd runs the NATS server embedded in every control node: the
// bus the routing table reaches edges on. Control nodes cluster their
// servers with routes to each other, so an edge connected to any of them
// hears the leader, and an edge whose server dies reconnects to another.
//
// Every connection authenticates: the control nodes with a user and
// password or a token, which may do anything; edges that joined the
// fleet with their own nkeys, which may only read tables and publish
// their own reports (auth.go). A listener beyond loopback must use TLS. It must never log a credential:
// NATS' own logs pass through a filter that redacts them.
package natsd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures an embedded server.
type Config struct {
	// Name names the server in NATS' cluster view; use the control
	// node's name.
	Name string
	// Listen is the client address, host:port; port 0 picks a free one.
	Listen string
	// ClusterName names the NATS cluster. Default "meridian".
	ClusterName string
	// ClusterListen is the route address other control nodes' servers
	// connect to, host:port (port 0 picks one); empty runs the server
	// alone.
	ClusterListen string
	// Routes are the other control nodes' ClusterListen addresses,
	// host:port. Listing every node, itself included, is fine.
	Routes []string
	// User and Password authenticate clients and routes.
	User     string
	Password string
	// Token authenticates clients when no user is given; routes then
	// authenticate with it as the password.
	Token string
	// Identities, when set, also admits edges by their own nkeys, each
	// with EdgePermissions (auth.go); the token or user above is then the
	// control nodes' credential. Call Server.Refresh when they change.
	Identities Identities
	// TLS, when set, makes clients use TLS with this server config. It
	// is required when Listen is not a loopback address.
	TLS *tls.Config
	// ClusterTLS, when set, makes routes use TLS (it must carry a client
	// certificate and the peers' CA).
	ClusterTLS *tls.Config
	// MaxPayload bounds one message, bytes. Default 8 MiB, above the
	// routing table's size cap.
	MaxPayload int32
	// StoreDir, when set, enables JetStream with its file store there
	// (usage records, see shared/usagewire). Every write is fsynced
	// before it is acknowledged (SyncAlways), departing from JetStream's
	// default lazy fsync, which Jepsen showed loses acknowledged writes.
	// With routes JetStream runs clustered: Name must be unique per
	// node, and ClusterName the same on every node.
	StoreDir string
	// LeafListen, when set, is the leafnode address regional leaf nodes
	// (control/leaf) connect to, host:port (port 0 picks one). It needs
	// LeafPassword, and TLS beyond loopback (LeafTLS).
	LeafListen string
	// LeafPassword authenticates leaf nodes on LeafListen, as user
	// LeafUser; a leaf connection may carry only what edges and the
	// leaf's table keeper need (LeafPermissions).
	LeafPassword string
	// LeafTLS, when set, makes leaf nodes connect with TLS.
	LeafTLS *tls.Config
	// Hub, when set, runs this server as a leaf node of the control
	// plane's servers: their LeafListen addresses, host:port, tried in
	// turn. It authenticates as LeafUser with HubPassword.
	Hub []string
	// HubPassword is the leaf credential the control nodes' LeafPassword
	// names.
	HubPassword string
	// HubTLS, when set, makes the connection to the hub use TLS (it
	// must carry the hub's CA in RootCAs).
	HubTLS *tls.Config
	// PingInterval is how often the server pings its connections, the
	// hub's included; MaxPingsOut unanswered pings close one. A leaf
	// node uses a short interval, so a cut that stalls the hub's
	// connection without closing it is noticed in about PingInterval ×
	// (MaxPingsOut + 1). Zero keeps NATS' defaults (2 min, 2).
	PingInterval time.Duration
	MaxPingsOut  int
	// ReadyTimeout bounds the wait for the listener. Default 10 s.
	ReadyTimeout time.Duration
	// Logger receives NATS' notices, warnings and errors, credentials
	// redacted.
	Logger *slog.Logger
}

// DefaultConfig returns a server on 127.0.0.1:4222 that is not clustered;
// credentials must still be set.
func DefaultConfig() Config {
	return Config{
		Name: "control", Listen: "127.0.0.1:4222", ClusterName: "meridian",
		MaxPayload: 8 << 20, ReadyTimeout: 10 * time.Second, Logger: slog.Default(),
	}
}

// ErrNoAuth means the config gives neither a user and password nor a
// token: the bus carries the routing table and must never be open.
var ErrNoAuth = errors.New("natsd: a user and password, or a token, is required")

// ErrNoLeafAuth means a leaf listener, or a connection to a hub, has no
// leaf credential.
var ErrNoLeafAuth = errors.New("natsd: leaf nodes need a leaf credential (MERIDIAN_NATS_LEAF_PASSWORD)")

// LeafUser is the user leaf nodes authenticate to the hub as.
const LeafUser = "meridian-leaf"

// ErrPlainNonLoopback is a client listener beyond loopback without TLS:
// credentials and tables would cross the network in the clear.
var ErrPlainNonLoopback = errors.New("natsd: a listener that is not loopback needs TLS")

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if (c.User == "" || c.Password == "") && c.Token == "" {
		errs = append(errs, ErrNoAuth)
	}
	if c.User != "" && c.Password == "" {
		errs = append(errs, errors.New("natsd: a user needs a password"))
	}
	if h, _, err := hostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("natsd: listen: %w", err))
	} else if c.TLS == nil && !loopbackHost(h) {
		errs = append(errs, fmt.Errorf("%w: %s", ErrPlainNonLoopback, c.Listen))
	}
	if c.ClusterListen != "" {
		if h, _, err := hostPort(c.ClusterListen); err != nil {
			errs = append(errs, fmt.Errorf("natsd: cluster listen: %w", err))
		} else if c.ClusterTLS == nil && !loopbackHost(h) {
			errs = append(errs, fmt.Errorf("%w: cluster listen %s", ErrPlainNonLoopback, c.ClusterListen))
		}
	}
	for _, r := range c.Routes {
		if _, _, err := hostPort(r); err != nil {
			errs = append(errs, fmt.Errorf("natsd: route %q: %w", r, err))
		}
	}
	if len(c.Routes) > 0 && c.ClusterListen == "" {
		errs = append(errs, errors.New("natsd: routes need a cluster listen address"))
	}
	if c.MaxPayload < 1<<20 {
		errs = append(errs, errors.New("natsd: max payload must be at least 1 MiB"))
	}
	if c.ReadyTimeout <= 0 {
		errs = append(errs, errors.New("natsd: ready timeout must be positive"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("natsd: logger is required"))
	}
	if c.LeafListen != "" {
		if h, _, err := hostPort(c.LeafListen); err != nil {
			errs = append(errs, fmt.Errorf("natsd: leaf listen: %w", err))
		} else if c.LeafTLS == nil && !loopbackHost(h) {
			errs = append(errs, fmt.Errorf("%w: leaf listen %s", ErrPlainNonLoopback, c.LeafListen))
		}
		if c.LeafPassword == "" {
			errs = append(errs, ErrNoLeafAuth)
		}
	}
	for _, h := range c.Hub {
		host, _, err := hostPort(h)
		if err != nil {
			errs = append(errs, fmt.Errorf("natsd: hub %q: %w", h, err))
		} else if c.HubTLS == nil && !loopbackHost(host) {
			errs = append(errs, fmt.Errorf("%w: hub %s", ErrPlainNonLoopback, h))
		}
	}
	if len(c.Hub) > 0 && c.HubPassword == "" {
		errs = append(errs, ErrNoLeafAuth)
	}
	if len(c.Hub) > 0 && (c.StoreDir != "" || c.LeafListen != "") {
		errs = append(errs, errors.New("natsd: a leaf node runs neither JetStream nor a leaf listener of its own"))
	}
	if c.PingInterval < 0 || c.MaxPingsOut < 0 {
		errs = append(errs, errors.New("natsd: ping interval and max pings out must not be negative"))
	}
	if c.StoreDir != "" && (c.Name == "" || c.ClusterListen != "" && c.ClusterName == "") {
		errs = append(errs, errors.New("natsd: JetStream needs a server name, and a cluster name when clustered"))
	}
	return errors.Join(errs...)
}

func hostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number from 0 to 65535", p)
	}
	return h, n, nil
}

// Server is a running embedded NATS server.
type Server struct {
	ns   *server.Server
	cfg  Config
	auth *auth
}

// Start starts the server and waits until it accepts clients.
func Start(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, port, _ := hostPort(cfg.Listen)
	opts := &server.Options{
		ServerName: cfg.Name, Host: host, Port: port,
		MaxPayload: cfg.MaxPayload, NoSigs: true, NoSystemAccount: true,
	}
	if port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	routeUser, routePass := cfg.User, cfg.Password
	if cfg.User == "" {
		routeUser, routePass = "meridian-route", cfg.Token
	}
	// One authenticator for every client, so the control credential and
	// the edges' nkeys are checked in one place, and a nonce is always
	// sent for the nkeys to sign.
	au := &auth{user: []byte(cfg.User), pass: []byte(cfg.Password), token: []byte(cfg.Token), ids: cfg.Identities}
	if cfg.LeafListen != "" {
		au.leafPass = []byte(cfg.LeafPassword)
	}
	opts.CustomClientAuthentication, opts.AlwaysEnableNonce = au, true
	if cfg.TLS != nil {
		opts.TLS, opts.TLSConfig, opts.TLSTimeout = true, cfg.TLS, 5
	}
	if cfg.StoreDir != "" {
		opts.JetStream, opts.StoreDir, opts.SyncAlways = true, cfg.StoreDir, true
	}
	// Clustered JetStream needs routes to another server: a node whose
	// route list names only itself runs JetStream alone, unclustered.
	others := 0
	for _, r := range cfg.Routes {
		if r != cfg.ClusterListen {
			others++
		}
	}
	if cfg.ClusterListen != "" && (cfg.StoreDir == "" || others > 0) {
		ch, cp, _ := hostPort(cfg.ClusterListen)
		if cp == 0 {
			cp = server.RANDOM_PORT
		}
		opts.Cluster = server.ClusterOpts{
			Name: cfg.ClusterName, Host: ch, Port: cp,
			Username: routeUser, Password: routePass,
			ConnectRetries: -1,
		}
		if cfg.ClusterTLS != nil {
			opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = cfg.ClusterTLS, 5
		}
		scheme := "nats-route"
		for _, r := range cfg.Routes {
			if r == cfg.ClusterListen {
				continue
			}
			opts.Routes = append(opts.Routes, &url.URL{Scheme: scheme, User: url.UserPassword(routeUser, routePass), Host: r})
		}
	}
	if cfg.LeafListen != "" {
		lh, lp, _ := hostPort(cfg.LeafListen)
		if lp == 0 {
			lp = server.RANDOM_PORT
		}
		// No authorization block of its own: leaf connections then go
		// through the same authenticator as clients (auth.go), which
		// gives the leaf credential LeafPermissions. (nats-server binds
		// a leafnode block's users to an account but does not apply
		// their permissions.)
		opts.LeafNode = server.LeafNodeOpts{Host: lh, Port: lp}
		if cfg.LeafTLS != nil {
			opts.LeafNode.TLSConfig, opts.LeafNode.TLSTimeout = cfg.LeafTLS, 5
		}
	}
	if len(cfg.Hub) > 0 {
		scheme := "nats-leaf"
		if cfg.HubTLS != nil {
			scheme = "tls"
		}
		r := &server.RemoteLeafOpts{}
		for _, h := range cfg.Hub {
			r.URLs = append(r.URLs, &url.URL{Scheme: scheme, User: url.UserPassword(LeafUser, cfg.HubPassword), Host: h})
		}
		if cfg.HubTLS != nil {
			r.TLS, r.TLSConfig, r.TLSTimeout = true, cfg.HubTLS, 5
		}
		opts.LeafNode.Remotes = []*server.RemoteLeafOpts{r}
		// Reconnect quickly once the hub is back: the region's edges
		// wait for it to report and send usage.
		opts.LeafNode.ReconnectInterval = time.Second
	}
	if cfg.PingInterval > 0 {
		opts.PingInterval = cfg.PingInterval
	}
	if cfg.MaxPingsOut > 0 {
		opts.MaxPingsOut = cfg.MaxPingsOut
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsd: %w", err)
	}
	ns.SetLoggerV2(&logger{l: cfg.Logger.With("component", "nats"), secrets: secrets(cfg)}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(cfg.ReadyTimeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("natsd: not accepting clients on %s after %s", cfg.Listen, cfg.ReadyTimeout)
	}
	return &Server{ns: ns, cfg: cfg, auth: au}, nil
}

// ClientURL returns the URL clients connect to, without credentials.
func (s *Server) ClientURL() string {
	scheme := "nats"
	if s.cfg.TLS != nil {
		scheme = "tls"
	}
	return scheme + "://" + s.ns.Addr().String()
}

// ClusterAddr returns the route listener's host:port, or "" when the
// server is not clustered.
func (s *Server) ClusterAddr() string {
	if a := s.ns.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// JetStream reports whether the server runs JetStream, and whether
// clustered (then with the other control nodes' servers).
func (s *Server) JetStream() (enabled, clustered bool) {
	return s.ns.JetStreamEnabled(), s.ns.JetStreamIsClustered()
}

// JetStreamPeers returns how many servers JetStream spans: 1 alone, else
// this node and its configured routes.
func (s *Server) JetStreamPeers() int {
	if !s.ns.JetStreamIsClustered() {
		return 1
	}
	n := 1
	for _, r := range s.cfg.Routes {
		if r != s.cfg.ClusterListen {
			n++
		}
	}
	return n
}

// LeafAddr returns the leafnode listener's host:port, or "" when there
// is none.
func (s *Server) LeafAddr() string {
	if s.cfg.LeafListen == "" {
		return ""
	}
	v, err := s.ns.Varz(nil)
	if err != nil || v.LeafNode.Port == 0 {
		return ""
	}
	return net.JoinHostPort(v.LeafNode.Host, strconv.Itoa(v.LeafNode.Port))
}

// HubConnected reports whether a leaf node's connection to the hub is
// up; false for a server that is not a leaf node.
func (s *Server) HubConnected() bool { return len(s.cfg.Hub) > 0 && s.ns.NumLeafNodes() > 0 }

// NumLeafNodes returns how many leafnode connections are up: on the hub,
// its regional leaves; on a leaf, its connection to the hub.
func (s *Server) NumLeafNodes() int { return s.ns.NumLeafNodes() }

// NumRoutes returns how many routes to other servers are up.
func (s *Server) NumRoutes() int { return s.ns.NumRoutes() }

// Shutdown stops the server, closing every client connection.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

func secrets(c Config) []string {
	var out []string
	for _, s := range []string{c.Password, c.Token, c.LeafPassword, c.HubPassword} {
		if s != "" {
			out = append(out, s, url.QueryEscape(s), url.PathEscape(s))
		}
	}
	return out
}

// logger passes NATS' logs to slog, redacting credentials. Debug and
// trace are off: traces would carry connection details.
type logger struct {
	l       *slog.Logger
	secrets []string
}

func (g *logger) msg(format string, v []any) string {
	s := fmt.Sprintf(format, v...)
	for _, sec := range g.secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return s
}

func (g *logger) Noticef(format string, v ...any) { g.l.Info(g.msg(format, v)) }
func (g *logger) Warnf(format string, v ...any)   { g.l.Warn(g.msg(format, v)) }
func (g *logger) Fatalf(format string, v ...any)  { g.l.Error(g.msg(format, v)) }
func (g *logger) Errorf(format string, v ...any)  { g.l.Error(g.msg(format, v)) }
func (g *logger) Debugf(format string, v ...any)  { g.l.Debug(g.msg(format, v)) }
func (g *logger) Tracef(format string, v ...any)  { g.l.Debug(g.msg(format, v)) }

// InProcessConn returns a connection to the server that never leaves
// the process (nats.InProcessServer), so the control node's own client
// needs neither the network nor TLS.
func (s *Server) InProcessConn() (net.Conn, error) { return s.ns.InProcessConn() }
