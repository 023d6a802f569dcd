package node

import (
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// sendBuffer is the socket send buffer of every client connection. It
// bounds what a client that stops reading makes the edge produce before
// a write blocks and the stream's write deadline can cut it: with the
// kernel's autotuned buffer (megabytes on loopback) a stalled reader
// keeps its stream, its upstream and its engine slot busy until all of
// that is written. Token streams need a small fraction of it.
const sendBuffer = 256 << 10

// tooManyConnections is the whole answer to a connection over the limit.
// The request is never read, so its format is unknown: the body is in
// OpenAI's shape, which Anthropic's SDKs also read as an overload.
var tooManyConnections = func() []byte {
	body := `{"error":{"message":"This Meridian node holds as many connections as it may; retry shortly.","type":"server_error","param":null,"code":"server_overloaded"}}`
	return []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

// limitListener holds at most max client connections open at once.
// Beyond that, Accept answers the new connection 503 itself and closes
// it, so the server never reads from it.
type limitListener struct {
	net.Listener
	max  int64
	open atomic.Int64
}

// newLimitListener limits ln to max connections; max < 1 means no limit.
func newLimitListener(ln net.Listener, max int) *limitListener {
	if max < 1 {
		max = math.MaxInt
	}
	return &limitListener{Listener: ln, max: int64(max)}
}

// Accept returns the next connection within the limit.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetWriteBuffer(sendBuffer)
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			// The answer fits any socket buffer; the deadline only
			// guards against a peer that has already gone.
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write(tooManyConnections)
			c.Close()
			continue
		}
		return &limitedConn{Conn: c, l: l}, nil
	}
}

// limitedConn gives its place back once, when closed.
type limitedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}
