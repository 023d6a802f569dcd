package node

import (
	"bufio"
	"fmt"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestMaxConnectionsRefused holds every allowed connection open: the
// next one is answered 503 with Retry-After, in OpenAI's error shape,
// and once one is closed a new connection is served again.
func TestMaxConnectionsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newLimitListener(ln, 2)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), ReadHeaderTimeout: time.Minute}
	go srv.Serve(l)
	defer srv.Close()
	get := func() (*http.Response, error) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
		}
		return resp, err
	}
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	wait.For(t, 10*time.Second, "the held connections to be accepted", func() bool { return l.open.Load() >= 2 })
	resp, err := get()
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a connection over the limit got %v, %v; want 503 with Retry-After", resp, err)
	}
	held[0].Close()
	wait.For(t, 10*time.Second, "a connection served again after one closed", func() error {
		resp, err := get()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		return err
	})
}
