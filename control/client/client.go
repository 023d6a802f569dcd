// Package client is a Go client for the control plane's management API,
// used by meridianctl and tests.
//
// Writes carry a request ID and are retried, with the same ID, on
// transport errors and 503 answers, rotating through the addresses
// given; the control plane applies a request ID once, so a retry never
// applies a write twice. This package must never log tokens.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/cluster"
	"github.com/meridian-mesh/meridian/control/fsm"
)

// Error is an error answer from the API.
type Error struct {
	Status  int
	Code    string
	Message string
	Field   string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s (%d)", e.Code, e.Status)
	if e.Field != "" {
		s += " " + e.Field
	}
	return s + ": " + e.Message
}

// Is matches fsm's sentinel errors by code.
func (e *Error) Is(target error) bool {
	return (&fsm.Error{Code: e.Code}).Is(target)
}

// Config configures a Client.
type Config struct {
	// Addrs are API base URLs ("http://host:port"); requests go to the
	// first and move on when one fails.
	Addrs []string
	// Token is the bearer token.
	Token string
	// RetryTimeout bounds how long a write is retried, on top of the
	// server's own hold. Zero means 30 s.
	RetryTimeout time.Duration
	// HTTP is the client to use; nil means one with a pool sized for
	// concurrent writers.
	HTTP *http.Client
}

// Client talks to the management API.
type Client struct {
	cfg  Config
	http *http.Client
	next atomic.Uint32
}

// New returns a client.
func New(cfg Config) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("no control address given")
	}
	cfg.Addrs = append([]string(nil), cfg.Addrs...) // the caller's slice stays as it was
	for i, a := range cfg.Addrs {
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		if _, err := url.Parse(a); err != nil {
			return nil, fmt.Errorf("control address %q: %w", a, err)
		}
		cfg.Addrs[i] = strings.TrimSuffix(a, "/")
	}
	if cfg.RetryTimeout == 0 {
		cfg.RetryTimeout = 30 * time.Second
	}
	c := &Client{cfg: cfg, http: cfg.HTTP}
	if c.http == nil {
		c.http = &http.Client{Transport: &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}}
	}
	return c, nil
}

// Response is a successful answer's body and index.
type Response struct {
	Status int
	Body   []byte
	Index  uint64
}

// Do sends one request. Writes (reqID not empty) are retried on transport
// errors and 503s with the same request ID; reads are retried on
// transport errors only.
func (c *Client) Do(ctx context.Context, method, path string, body []byte, reqID string) (*Response, error) {
	deadline := time.Now().Add(c.cfg.RetryTimeout)
	var last error
	for attempt := 0; ; attempt++ {
		i := int(c.next.Load()) % len(c.cfg.Addrs)
		resp, err := c.once(ctx, c.cfg.Addrs[i]+path, method, body, reqID)
		if err == nil {
			return resp, nil
		}
		var apiErr *Error
		var certErr *tls.CertificateVerificationError
		retry := !errors.As(err, &apiErr) || (reqID != "" && apiErr.Status == http.StatusServiceUnavailable)
		if errors.As(err, &certErr) {
			retry = false // a retry meets the same certificate
		}
		if !retry || ctx.Err() != nil || time.Now().After(deadline) {
			if last != nil && !errors.As(err, &apiErr) {
				return nil, fmt.Errorf("%w (earlier: %v)", err, last)
			}
			return nil, err
		}
		last = err
		if !errors.As(err, &apiErr) {
			c.next.CompareAndSwap(uint32(i), uint32(i+1)) // that node is down: try the next
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(min(attempt+1, 10)) * 50 * time.Millisecond):
		}
	}
}

func (c *Client) once(ctx context.Context, u, method string, body []byte, reqID string) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if reqID != "" {
		req.Header.Set(api.HeaderRequestID, reqID)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := &Response{Status: resp.StatusCode, Body: b}
	out.Index, _ = strconv.ParseUint(resp.Header.Get(api.HeaderIndex), 10, 64)
	if resp.StatusCode >= 300 {
		var eb struct {
			Error struct {
				Code, Message, Field string
			}
		}
		if json.Unmarshal(b, &eb) != nil || eb.Error.Code == "" {
			return nil, &Error{Status: resp.StatusCode, Code: "http", Message: strings.TrimSpace(string(b))}
		}
		return nil, &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message, Field: eb.Error.Field}
	}
	return out, nil
}

func kindPath(kind string) (*fsm.Kind, error) {
	k, ok := fsm.KindByName(kind)
	if !ok {
		names := make([]string, len(fsm.Kinds))
		for i, k := range fsm.Kinds {
			names[i] = k.Name
		}
		return nil, fmt.Errorf("unknown kind %q (known: %s)", kind, strings.Join(names, ", "))
	}
	return k, nil
}

// ReadOptions adjust a read.
type ReadOptions struct {
	// Consistent asks for a linearizable read.
	Consistent bool
	// Index and Wait make a blocking query: it returns once the state's
	// index passes Index, or after Wait.
	Index uint64
	Wait  time.Duration
}

func (o ReadOptions) query() string {
	q := url.Values{}
	if o.Consistent {
		q.Set("consistent", "")
	}
	if o.Index > 0 {
		q.Set("index", strconv.FormatUint(o.Index, 10))
		if o.Wait > 0 {
			q.Set("wait", o.Wait.String())
		}
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// List returns every entity of a kind, and the index of the state read.
func (c *Client) List(ctx context.Context, kind string, o ReadOptions) ([]proto.Message, uint64, error) {
	k, err := kindPath(kind)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.Do(ctx, http.MethodGet, "/v1/control/"+k.Plural+o.query(), nil, "")
	if err != nil {
		return nil, 0, err
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(resp.Body, &raw); err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", k.Plural, err)
	}
	out := make([]proto.Message, len(raw))
	for i, r := range raw {
		m := k.New()
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(r, m); err != nil {
			return nil, 0, fmt.Errorf("list %s: %w", k.Plural, err)
		}
		out[i] = m
	}
	return out, resp.Index, nil
}

// Get returns one entity.
func (c *Client) Get(ctx context.Context, kind, id string, o ReadOptions) (proto.Message, error) {
	k, err := kindPath(kind)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(ctx, http.MethodGet, "/v1/control/"+k.Plural+"/"+escapeID(id)+o.query(), nil, "")
	if err != nil {
		return nil, err
	}
	m := k.New()
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(resp.Body, m); err != nil {
		return nil, fmt.Errorf("get %s %s: %w", k.Name, id, err)
	}
	return m, nil
}

// escapeID escapes an ID as one path segment: a model ID may hold '/',
// and sent as is, "a//b" or "a/./b" would be cleaned by the server's mux
// into another ID.
func escapeID(id string) string { return url.PathEscape(id) }

// WriteOptions adjust a write.
type WriteOptions struct {
	// RequestID names the write; empty means a new random one. Give the
	// same ID to retry a write whose outcome is unknown.
	RequestID string
}

func (o WriteOptions) id() string {
	if o.RequestID != "" {
		return o.RequestID
	}
	return cluster.NewUUID()
}

func writeIndex(resp *Response) uint64 {
	var wr api.WriteResult
	if json.Unmarshal(resp.Body, &wr) == nil && wr.Index > 0 {
		return wr.Index
	}
	return resp.Index
}

// Put creates or replaces an entity and returns the index it applied at.
func (c *Client) Put(ctx context.Context, m proto.Message, o WriteOptions) (uint64, error) {
	k, ok := fsm.KindOf(m)
	if !ok {
		return 0, fmt.Errorf("put: %T is not an entity", m)
	}
	body, err := api.EncodeEntity(m)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(ctx, http.MethodPut, "/v1/control/"+k.Plural+"/"+escapeID(k.ID(m)), body, o.id())
	if err != nil {
		return 0, err
	}
	return writeIndex(resp), nil
}

// Create creates an entity, failing with a conflict if it exists.
func (c *Client) Create(ctx context.Context, m proto.Message, o WriteOptions) (uint64, error) {
	k, ok := fsm.KindOf(m)
	if !ok {
		return 0, fmt.Errorf("create: %T is not an entity", m)
	}
	body, err := api.EncodeEntity(m)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(ctx, http.MethodPost, "/v1/control/"+k.Plural, body, o.id())
	if err != nil {
		return 0, err
	}
	return writeIndex(resp), nil
}

// Delete deletes an entity.
func (c *Client) Delete(ctx context.Context, kind, id string, o WriteOptions) (uint64, error) {
	k, err := kindPath(kind)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(ctx, http.MethodDelete, "/v1/control/"+k.Plural+"/"+escapeID(id), nil, o.id())
	if err != nil {
		return 0, err
	}
	return writeIndex(resp), nil
}

// Ref names an entity.
type Ref struct {
	Kind string
	ID   string
}

// Batch puts and deletes entities atomically.
func (c *Client) Batch(ctx context.Context, puts []proto.Message, deletes []Ref, o WriteOptions) (uint64, error) {
	var b api.Batch
	for _, m := range puts {
		k, ok := fsm.KindOf(m)
		if !ok {
			return 0, fmt.Errorf("batch: %T is not an entity", m)
		}
		raw, err := api.EncodeEntity(m)
		if err != nil {
			return 0, err
		}
		one, err := json.Marshal(api.BatchPut{Kind: k.Name, Entity: raw})
		if err != nil {
			return 0, err
		}
		b.Put = append(b.Put, one)
	}
	for _, d := range deletes {
		b.Delete = append(b.Delete, api.BatchDelete{Kind: d.Kind, ID: d.ID})
	}
	body, err := json.Marshal(b)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(ctx, http.MethodPost, "/v1/control/batch", body, o.id())
	if err != nil {
		return 0, err
	}
	return writeIndex(resp), nil
}

// Cluster returns the cluster's members, leader and indexes as the
// answering node sees them.
func (c *Client) Cluster(ctx context.Context) (*api.ClusterInfo, error) {
	resp, err := c.Do(ctx, http.MethodGet, "/v1/control/cluster", nil, "")
	if err != nil {
		return nil, err
	}
	var info api.ClusterInfo
	if err := json.Unmarshal(resp.Body, &info); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return &info, nil
}

// Join adds the control node serving its API at addr as a voter.
func (c *Client) Join(ctx context.Context, addr string) (*api.Self, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	body, _ := json.Marshal(api.JoinRequest{Addr: addr})
	resp, err := c.Do(ctx, http.MethodPost, "/v1/control/cluster/join", body, cluster.NewUUID())
	if err != nil {
		return nil, err
	}
	var self api.Self
	if err := json.Unmarshal(resp.Body, &self); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	return &self, nil
}

// RemovePeer removes a control node, by ID, from the cluster.
func (c *Client) RemovePeer(ctx context.Context, id string) error {
	_, err := c.Do(ctx, http.MethodDelete, "/v1/control/cluster/peers/"+url.PathEscape(id), nil, cluster.NewUUID())
	return err
}

// Transfer asks the leader to hand leadership to the most up-to-date
// other voter, and returns the ID of the node that led.
func (c *Client) Transfer(ctx context.Context) (string, error) {
	resp, err := c.Do(ctx, http.MethodPost, "/v1/control/cluster/transfer", nil, cluster.NewUUID())
	if err != nil {
		return "", err
	}
	var out struct {
		From string `json:"from"`
	}
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		return "", fmt.Errorf("transfer: %w", err)
	}
	return out.From, nil
}

// SnapshotSave writes a consistent snapshot of the whole state to w and
// returns its index.
func (c *Client) SnapshotSave(ctx context.Context, w io.Writer) (uint64, error) {
	resp, err := c.Do(ctx, http.MethodGet, "/v1/control/snapshot", nil, "")
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(resp.Body); err != nil {
		return 0, fmt.Errorf("write snapshot: %w", err)
	}
	return resp.Index, nil
}

// SnapshotRestore replaces the cluster's whole state with a snapshot.
func (c *Client) SnapshotRestore(ctx context.Context, r io.Reader) (uint64, error) {
	body, err := io.ReadAll(r)
	if err != nil {
		return 0, fmt.Errorf("read snapshot: %w", err)
	}
	resp, err := c.Do(ctx, http.MethodPut, "/v1/control/snapshot", body, cluster.NewUUID())
	if err != nil {
		return 0, err
	}
	return writeIndex(resp), nil
}

// RotateTableKey runs one step of a table-key rotation: "stage" creates
// the next key, "promote" signs with it from then on.
func (c *Client) RotateTableKey(ctx context.Context, step string) (*api.TableKey, error) {
	resp, err := c.Do(ctx, http.MethodPost, "/v1/control/table-key/"+step, nil, "")
	if err != nil {
		return nil, err
	}
	var k api.TableKey
	if err := json.Unmarshal(resp.Body, &k); err != nil {
		return nil, fmt.Errorf("table key: %w", err)
	}
	return &k, nil
}

// TableKey returns the cluster's table-signing public key and ID, which
// edges pin in their config.
func (c *Client) TableKey(ctx context.Context) (*api.TableKey, error) {
	resp, err := c.Do(ctx, http.MethodGet, "/v1/control/table-key", nil, "")
	if err != nil {
		return nil, err
	}
	var k api.TableKey
	if err := json.Unmarshal(resp.Body, &k); err != nil {
		return nil, fmt.Errorf("table key: %w", err)
	}
	return &k, nil
}

// UsageQuery selects and groups usage totals (GET /v1/control/usage).
type UsageQuery struct {
	Tenant, Key, Model string
	// From and To are RFC 3339; empty means unbounded.
	From, To string
	// GroupBy lists tenant, key, model, hour or day.
	GroupBy []string
}

// Usage returns the usage totals matching q.
func (c *Client) Usage(ctx context.Context, q UsageQuery, o ReadOptions) (*api.UsageResponse, error) {
	v := url.Values{}
	for k, s := range map[string]string{"tenant": q.Tenant, "key": q.Key, "model": q.Model, "from": q.From, "to": q.To,
		"group_by": strings.Join(q.GroupBy, ",")} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if o.Consistent {
		v.Set("consistent", "")
	}
	path := "/v1/control/usage"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	resp, err := c.Do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return nil, err
	}
	var out api.UsageResponse
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return &out, nil
}
