package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meridian-mesh/meridian/shared/pki"
)

// RaftTLS is the Raft transport's mutual TLS: every connection, in
// either direction, presents a certificate signed by CA, so only control
// nodes holding one can send AppendEntries or InstallSnapshot. Files are
// PEM, as `meridianctl tls ca` and `meridianctl tls cert` write them; a
// node's certificate must name the host of its Raft address. Use a CA for
// the control plane alone: any certificate it signed can join the Raft
// conversation.
type RaftTLS struct {
	CAFile, CertFile, KeyFile string
}

// ErrInsecureRaft is a Raft address off loopback without TLS and without
// the explicit development opt-out.
var ErrInsecureRaft = errors.New("raft on a non-loopback address needs mutual TLS (-raft-tls-ca, -raft-tls-cert, -raft-tls-key), or -raft-insecure for development")

// configs loads the server and client TLS configs.
func (t *RaftTLS) configs() (server, client *tls.Config, err error) {
	pool, err := pki.LoadPool(t.CAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("raft tls ca: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("raft tls cert: %w", err)
	}
	server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	client = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool}
	return server, client, nil
}

// tlsStream is a raft.StreamLayer over mutual TLS.
type tlsStream struct {
	net.Listener // a tls listener
	advertise    net.Addr
	client       *tls.Config
}

var _ raft.StreamLayer = (*tlsStream)(nil)

func (s *tlsStream) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.Listener.Addr()
}

// Dial connects and completes the handshake before raft writes anything,
// so an RPC never goes to a peer that did not prove its certificate.
func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(address))
	if err != nil {
		return nil, err
	}
	cfg := s.client.Clone()
	cfg.ServerName = host
	d := &net.Dialer{Timeout: timeout}
	return tls.DialWithDialer(d, "tcp", string(address), cfg)
}

// openTransport returns the node's Raft transport: mutual TLS when
// configured, plain TCP otherwise (loopback only, or explicitly insecure;
// Config.Validate enforces it).
func openTransport(cfg Config, advertise net.Addr, tcfg *raft.NetworkTransportConfig) (*raft.NetworkTransport, error) {
	if cfg.RaftTLS == nil {
		return raft.NewTCPTransportWithConfig(cfg.RaftAddr, advertise, tcfg)
	}
	server, client, err := cfg.RaftTLS.configs()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, err
	}
	s := &tlsStream{Listener: tls.NewListener(ln, server), advertise: advertise, client: client}
	if a, ok := s.Addr().(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft address %s is not advertisable: set -raft-advertise", s.Addr())
	}
	tcfg.Stream = s
	return raft.NewNetworkTransportWithConfig(tcfg), nil
}

// loopbackOnly reports whether addr's host is a loopback IP or localhost.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
