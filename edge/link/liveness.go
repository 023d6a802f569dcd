package link

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/shared/backoff"
	"github.com/quic-go/quic-go"
)

// Liveness. QUIC's own idle timeout is fixed and long (MaxIdleTimeout),
// so a link runs its own: the dialling side sends a PING datagram every
// PingInterval and the serving side echoes it as a PONG. The echoes give
// the link's RTT (EWMA, alpha 1/8) and its liveness: a link that has
// heard no PONG for
//
//	max(PingMisses × PingInterval, 3 × RTT + PingInterval)
//
// is declared dead and closed, which fails every request waiting on it
// at once (they fail over before their first byte) and marks the peer
// down. With the defaults that is 800 ms on a LAN; the RTT term only
// matters above about 180 ms RTT. Datagrams are never retransmitted, so
// up to PingMisses-1 lost PINGs in a row go unnoticed.
//
// The serving side does not ping: only the forwarding side has requests
// waiting on a link. A peer that does not support datagrams (an older
// build) keeps only QUIC's idle timeout.

const (
	dgPing byte = 1
	dgPong byte = 2
	// dgLen is a type byte and an 8-byte send time (ns since the link's
	// pinger started), echoed unchanged.
	dgLen = 9
)

// codeUnresponsive closes a link whose peer stopped answering PINGs.
const codeUnresponsive quic.ApplicationErrorCode = 0x12

// ErrUnresponsive is the cause recorded for a link declared dead because
// its PINGs went unanswered.
var ErrUnresponsive = errors.New("link: peer stopped answering pings")

// deadAfter is the silence after which a link with smoothed RTT srtt is
// declared dead.
func (c *Config) deadAfter(srtt time.Duration) time.Duration {
	return max(time.Duration(c.PingMisses)*c.PingInterval, 3*srtt+c.PingInterval)
}

func supportsPing(conn *quic.Conn) bool {
	cs := conn.ConnectionState()
	return cs.SupportsDatagrams.Local && cs.SupportsDatagrams.Remote
}

// pinger is one link's liveness, on the dialling side.
type pinger struct {
	cfg  *Config
	conn *quic.Conn
	base time.Time
	srtt time.Duration
}

func newPinger(cfg *Config, conn *quic.Conn) *pinger {
	return &pinger{cfg: cfg, conn: conn, base: time.Now()}
}

func (p *pinger) ping() error {
	var b [dgLen]byte
	b[0] = dgPing
	binary.BigEndian.PutUint64(b[1:], uint64(time.Since(p.base)))
	return p.conn.SendDatagram(b[:])
}

// pong waits for the next PONG until ctx ends, folding its RTT in.
func (p *pinger) pong(ctx context.Context) error {
	for {
		b, err := p.conn.ReceiveDatagram(ctx)
		if err != nil {
			return err
		}
		if len(b) != dgLen || b[0] != dgPong {
			continue
		}
		rtt := time.Since(p.base) - time.Duration(binary.BigEndian.Uint64(b[1:]))
		if rtt < 0 {
			continue
		}
		if p.srtt == 0 {
			p.srtt = rtt
		} else {
			p.srtt += (rtt - p.srtt) / 8
		}
		return nil
	}
}

// probe proves a new link answers: one PING, and its PONG within the
// link's death deadline (at least timeout). It returns the RTT.
func (p *pinger) probe(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	if !supportsPing(p.conn) {
		return 0, nil // an older peer: the handshake is all the proof there is
	}
	ctx, cancel := context.WithTimeout(ctx, max(timeout, p.cfg.deadAfter(0)))
	defer cancel()
	// Resend every interval: a lost PING must not fail the probe.
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(p.cfg.PingInterval)
		defer t.Stop()
		for {
			if p.ping() != nil {
				return
			}
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	if err := p.pong(ctx); err != nil {
		return 0, fmt.Errorf("probe: %w", err)
	}
	return p.srtt, nil
}

// run pings conn until it closes, and closes it once it has been silent
// for longer than deadAfter. rtt receives every new smoothed RTT; dead
// is called once if the link is declared dead.
func (p *pinger) run(rtt func(time.Duration), dead func()) {
	if !supportsPing(p.conn) {
		return
	}
	ctx := p.conn.Context()
	go func() {
		// Each wait is jittered ±10 % so links dialled together do not
		// ping in step.
		iv := p.cfg.PingInterval
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := p.ping(); err != nil {
				return
			}
			t.Reset(backoff.Spread(iv, 0.1))
		}
	}()
	last := time.Now()
	for {
		wctx, cancel := context.WithDeadline(ctx, last.Add(p.cfg.deadAfter(p.srtt)))
		err := p.pong(wctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			dead()
			p.conn.CloseWithError(codeUnresponsive, fmt.Sprintf("no answer to pings for %v", time.Since(last).Round(time.Millisecond)))
			return
		}
		last = time.Now()
		rtt(p.srtt)
	}
}

// echo answers a dialling peer's PINGs on an accepted link until it
// closes.
func echo(conn *quic.Conn) {
	if !conn.ConnectionState().SupportsDatagrams.Local {
		return
	}
	for {
		b, err := conn.ReceiveDatagram(conn.Context())
		if err != nil {
			return
		}
		if len(b) != dgLen || b[0] != dgPing {
			continue
		}
		b[0] = dgPong
		if conn.SendDatagram(b) != nil {
			return
		}
	}
}
