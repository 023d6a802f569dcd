package link

import (
	"crypto/tls"
	"errors"
	"fmt"
)

// serverTLS accepts only clients with a certificate from the cluster CA.
// Session tickets stay on (Go's default) because they carry 0-RTT; a
// resumed session keeps the client's verified chain, so mutual
// authentication holds on resumption too.
func serverTLS(cfg Config) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cfg.Certificate},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        cfg.CAs,
		NextProtos:       []string{ALPN},
		VerifyConnection: requireALPN,
	}
}

// clientTLS verifies the server against the cluster CA; the server name
// is set per peer (its node ID) when dialling.
func clientTLS(cfg Config) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cfg.Certificate},
		RootCAs:            cfg.CAs,
		NextProtos:         []string{ALPN},
		ClientSessionCache: cfg.SessionCache,
		VerifyConnection:   requireALPN,
	}
}

// requireALPN runs on full handshakes and resumptions alike.
func requireALPN(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol != ALPN {
		return fmt.Errorf("link: peer speaks %q, not %q", cs.NegotiatedProtocol, ALPN)
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("link: peer sent no certificate")
	}
	return nil
}

// peerName is the node a verified connection's certificate names.
func peerName(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	return cs.PeerCertificates[0].Subject.CommonName
}
