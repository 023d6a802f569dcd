package jobs

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/jobswire"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/webhook"
	"github.com/nats-io/nats.go/jetstream"
)

// Webhooks: a batch or job that names a callback URL gets one event
// when it ends (batch.completed, batch.failed, batch.cancelled,
// batch.expired, as OpenAI names them; job.completed for an async
// request). The event is published to the work stream (subject
// jobswire.HookSubject, message ID = event ID, so a finalizer that
// publishes twice delivers once) before the record turns terminal; any
// edge's deliverer pulls it, signs it in the Standard Webhooks format
// and POSTs it, and acknowledges it only on a 2xx. A failed call is
// NAKed with exponential backoff until WebhookRetryFor has passed since
// the event was emitted, then recorded as a dead letter (in the batches
// bucket, under the owner) and acknowledged. An edge that dies
// mid-delivery leaves the event to JetStream's redelivery.
//
// The URL is checked against the tenant's webhook_allow at submission
// and again at every call, and every address a call connects to is
// checked at connect time (net.Dialer.Control), after name resolution:
// a host that resolves to a private address the tenant did not name is
// refused, whatever it resolved to at submission.

// WebhookURLField is the Meridian extension field of POST /v1/batches
// (and metadata key, for SDKs that only pass metadata) naming a
// callback URL.
const WebhookURLField = "webhook_url"

// event is a webhook event on the stream.
type event struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Owner   string `json:"owner"`
	Tenant  string `json:"tenant"`
	URL     string `json:"url"`
	Subject string `json:"subject"` // the batch or job ID
	// Emitted is when it was first published, Unix nanoseconds: the
	// retry window runs from here.
	Emitted int64 `json:"emitted"`
	// Body is the JSON POSTed, the same on every attempt.
	Body json.RawMessage `json:"body"`
}

// DeadLetter is an event that was never delivered, as GET
// /v1/meridian/webhooks/dead lists it.
type DeadLetter struct {
	Object    string `json:"object"` // "webhook.dead_letter"
	ID        string `json:"id"`     // the event's webhook-id
	Type      string `json:"type"`
	URL       string `json:"url"`
	Subject   string `json:"subject"`
	Attempts  uint64 `json:"attempts"`
	LastError string `json:"last_error"`
	CreatedAt int64  `json:"created_at"` // when it was emitted, Unix seconds
	DeadAt    int64  `json:"dead_at"`
}

func deadKey(owner, id string) string { return "d." + jobswire.Token(owner) + "." + id }

// eventID is deterministic per subject and type: every finalizer of a
// batch publishes the same event.
func eventID(subject, typ string) string { return "msg_" + jobswire.Token(subject+"/"+typ) }

// webhookPolicy is the tenant's allow-list and secret, or an error
// saying why it allows nothing.
func webhookPolicy(t *table.Tenant) (webhook.Allowlist, []byte, error) {
	if t == nil || len(t.WebhookAllow) == 0 {
		return webhook.Allowlist{}, nil, errors.New("the tenant's policy names no webhook_allow")
	}
	secret, ok := strings.CutPrefix(string(t.WebhookSecret), "whsec_")
	key, err := base64.StdEncoding.DecodeString(secret)
	if !ok || err != nil || len(key) == 0 {
		return webhook.Allowlist{}, nil, errors.New("the tenant's webhook_secret_ref does not resolve to a whsec_<base64> secret on this edge")
	}
	a, err := webhook.Compile(t.WebhookAllow)
	if err != nil {
		return webhook.Allowlist{}, nil, err
	}
	return a, key, nil
}

// checkCallback checks a submitted callback URL for the caller; "" is
// no callback.
func checkCallback(id api.Identity, raw string) *llm.Error {
	if raw == "" {
		return nil
	}
	if id.Tenant == nil {
		return invalid(WebhookURLField, "Webhooks need a key that belongs to a tenant whose policy allows callbacks (webhook_allow).")
	}
	a, _, err := webhookPolicy(id.Tenant)
	if err == nil {
		_, err = a.CheckURL(raw)
	}
	if err != nil {
		e := invalid(WebhookURLField, "The webhook URL is refused: %v.", err)
		e.Code = "webhook_url_not_allowed"
		return e
	}
	return nil
}

// emit publishes rec's event typ, if it names a callback; data is the
// event's data object.
func (s *Service) emit(ctx context.Context, b *bus, rec *record, subject, typ string, data any) error {
	if rec.WebhookURL == "" {
		return nil
	}
	now := s.now()
	id := eventID(subject, typ)
	body := mustJSON(struct {
		Object    string `json:"object"`
		ID        string `json:"id"`
		Type      string `json:"type"`
		CreatedAt int64  `json:"created_at"`
		Data      any    `json:"data"`
	}{"event", id, typ, now.Unix(), data})
	ev := event{ID: id, Type: typ, Owner: rec.Owner, Tenant: rec.Tenant, URL: rec.WebhookURL, Subject: subject,
		Emitted: now.UnixNano(), Body: body}
	_, err := b.js.Publish(ctx, jobswire.HookSubject(rec.Owner), mustJSON(ev), jetstream.WithMsgID(id))
	if err != nil {
		return fmt.Errorf("publishing webhook event %s: %w", typ, err)
	}
	return nil
}

// Sign returns the Standard Webhooks webhook-signature of body for id
// and timestamp under key (the secret's decoded bytes).
func Sign(key []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.", id, ts)
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// deliverHooks pulls webhook events and delivers them until ctx ends.
func (s *Service) deliverHooks(ctx context.Context, b *bus) {
	var cons jetstream.Consumer
	for attempt := 0; cons == nil; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := b.js.CreateOrUpdateConsumer(cctx, jobswire.Stream, jetstream.ConsumerConfig{
			Durable: jobswire.HooksConsumer, FilterSubject: jobswire.HooksSubjects,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 3 * s.cfg.WebhookTimeout, MaxDeliver: -1,
			MaxAckPending: 256, DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		cancel()
		if err == nil {
			cons = c
			break
		}
		if attempt == 3 {
			s.log.Warn("webhook consumer", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.Retry.Delay(attempt)):
		}
	}
	for ctx.Err() == nil {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
				s.log.Debug("pulling a webhook event", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(s.cfg.Poll):
				}
			}
			continue
		}
		s.deliver(ctx, b, msg)
	}
}

// deliver makes one attempt at an event and settles its message.
func (s *Service) deliver(ctx context.Context, b *bus, msg jetstream.Msg) {
	var ev event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil || ev.ID == "" || ev.URL == "" {
		s.log.Warn("dropping a malformed webhook event", "err", err)
		msg.Term()
		return
	}
	delivered := uint64(1)
	if md, err := msg.Metadata(); err == nil {
		delivered = md.NumDelivered
	}
	err := s.call(ctx, ev)
	if ctx.Err() != nil {
		msg.Nak()
		return
	}
	if err == nil {
		msg.Ack()
		return
	}
	var perm permanent
	if !errors.As(err, &perm) && s.now().Sub(time.Unix(0, ev.Emitted)) < s.cfg.WebhookRetryFor {
		msg.NakWithDelay(s.cfg.WebhookRetry.Delay(int(delivered) - 1))
		return
	}
	dl := DeadLetter{Object: "webhook.dead_letter", ID: ev.ID, Type: ev.Type, URL: ev.URL, Subject: ev.Subject,
		Attempts: delivered, LastError: err.Error(), CreatedAt: time.Unix(0, ev.Emitted).Unix(), DeadAt: s.now().Unix()}
	bctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := b.batches.Create(bctx, deadKey(ev.Owner, ev.ID), mustJSON(dl)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		s.log.Warn("recording a dead webhook", "event", ev.ID, "err", err)
		msg.NakWithDelay(time.Second)
		return
	}
	s.log.Info("webhook dead-lettered", "event", ev.ID, "type", ev.Type, "attempts", delivered, "err", err)
	msg.Ack()
}

// permanent is a failure no retry can mend: the policy refuses the call.
type permanent struct{ error }

// call POSTs the event, signed, to its URL under the tenant's current
// policy.
func (s *Service) call(ctx context.Context, ev event) error {
	var t *table.Tenant
	if s.cfg.Tenant != nil {
		t = s.cfg.Tenant(ev.Tenant)
	}
	allow, key, err := webhookPolicy(t)
	if err != nil {
		return permanent{err}
	}
	if _, err := allow.CheckURL(ev.URL); err != nil {
		return permanent{err}
	}
	dialer := &net.Dialer{Timeout: s.cfg.WebhookTimeout, Control: func(_, address string, _ syscall.RawConn) error {
		// After resolution, before connecting: the address really used.
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: %s", webhook.ErrRefused, address)
		}
		return allow.CheckAddr(ap.Addr())
	}}
	client := &http.Client{
		Transport: &http.Transport{DialContext: dialer.DialContext, Proxy: nil, DisableKeepAlives: true,
			TLSHandshakeTimeout: s.cfg.WebhookTimeout, ResponseHeaderTimeout: s.cfg.WebhookTimeout},
		Timeout:       s.cfg.WebhookTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ts := s.now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ev.URL, bytes.NewReader(ev.Body))
	if err != nil {
		return permanent{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Meridian-Webhooks/1")
	req.Header.Set("webhook-id", ev.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", Sign(key, ev.ID, ts, ev.Body))
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, webhook.ErrRefused) {
			return permanent{err}
		}
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the receiver answered %d", resp.StatusCode)
	}
	return nil
}

// deadLetters is GET /v1/meridian/webhooks/dead: the caller's events
// that were never delivered, oldest first.
func (s *Service) deadLetters(w http.ResponseWriter, r *http.Request) {
	id, b, ok := s.begin(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	prefix := deadKey(owner(id), "")
	out := struct {
		Object string       `json:"object"`
		Data   []DeadLetter `json:"data"`
	}{Object: "list", Data: []DeadLetter{}}
	kl, err := b.batches.ListKeysFiltered(ctx, prefix+"*")
	if err != nil {
		s.fail(w, internal(err))
		return
	}
	var keys []string
	for k := range kl.Keys() {
		keys = append(keys, k)
	}
	kl.Stop()
	for _, k := range keys {
		e, err := b.batches.Get(ctx, k)
		if err != nil {
			continue
		}
		var dl DeadLetter
		if json.Unmarshal(e.Value(), &dl) == nil {
			out.Data = append(out.Data, dl)
		}
	}
	writeJSON(w, http.StatusOK, out)
}
