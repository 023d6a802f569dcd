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
	c := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cfg.Certificate},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        cfg.CAs,
		NextProtos:       []string{ALPN},
		VerifyConnection: requireALPN,
	}
	if cfg.GetCertificate != nil {
		c.Certificates = nil
		c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cfg.GetCertificate() }
	}
	return c
}

// clientTLS verifies the server against the cluster CA; the server name
// is set per peer (its node ID) when dialling.
func clientTLS(cfg Config) *tls.Config {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cfg.Certificate},
		RootCAs:            cfg.CAs,
		NextProtos:         []string{ALPN},
		ClientSessionCache: cfg.SessionCache,
		VerifyConnection:   requireALPN,
	}
	if cfg.GetCertificate != nil {
		c.Certificates = nil
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cfg.GetCertificate() }
	}
	return c
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
