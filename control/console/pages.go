package console

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The entities the console reads, in the API's JSON (protojson, field
// names as in the .proto files); fields it does not show are left out.
type (
	region struct {
		ID        string  `json:"id"`
		Name      string  `json:"name"`
		Latitude  float64 `json:"latitude"`
		Longitude float64 `json:"longitude"`
	}
	node struct {
		ID     string `json:"id"`
		Region string `json:"region"`
	}
	model struct {
		ID             string   `json:"id"`
		Local          bool     `json:"local"`
		AllowedRegions []string `json:"allowed_regions"`
	}
	target struct {
		Provider string `json:"provider"`
		Model    string `json:"model"`
		Weight   uint32 `json:"weight"`
	}
	route struct {
		Model          string   `json:"model"`
		Strategy       string   `json:"strategy"`
		Targets        []target `json:"targets"`
		Fallbacks      []target `json:"fallbacks"`
		AllowedRegions []string `json:"allowed_regions"`
		MaxPrice       float64  `json:"max_price"`
	}
	key struct {
		ID             string   `json:"id"`
		Tenant         string   `json:"tenant"`
		AllowedModels  []string `json:"allowed_models"`
		AllowedRegions []string `json:"allowed_regions"`
		RPM            uint32   `json:"rpm"`
		TPM            uint32   `json:"tpm"`
		ExpiresAt      string   `json:"expires_at"`
		Disabled       bool     `json:"disabled"`
	}
	tenant struct {
		ID string `json:"id"`
	}
)

// status is the distribution status (control/publish.Status), as
// GET /v1/control/distribution serves it.
type status struct {
	Leader           bool         `json:"leader"`
	StateRevision    uint64       `json:"state_revision"`
	TableRevision    uint64       `json:"table_revision"`
	Rejected         string       `json:"rejected"`
	RejectedRevision uint64       `json:"rejected_revision"`
	Edges            []edgeStatus `json:"edges"`
	Placements       []placement  `json:"placements"`
}

type edgeStatus struct {
	Node        string    `json:"node"`
	Region      string    `json:"region"`
	Revision    uint64    `json:"revision"`
	Lag         uint64    `json:"lag"`
	Ahead       bool      `json:"ahead"`
	Stale       bool      `json:"stale"`
	Silent      bool      `json:"silent"`
	LastReport  time.Time `json:"last_report"`
	ReadyModels []string  `json:"ready_models"`
}

type placement struct {
	ID      string   `json:"id"`
	Model   string   `json:"model"`
	Node    string   `json:"node"`
	Region  string   `json:"region"`
	Desired uint32   `json:"desired"`
	Nodes   []string `json:"nodes"`
	Ready   []string `json:"ready"`
	// Pending marks a placement written but not yet in the last valid
	// table (or rejected with it): where it resolves is not known.
	Pending bool `json:"-"`
}

// usageRow is one row of GET /v1/control/usage.
type usageRow struct {
	Tenant      string `json:"tenant"`
	Key         string `json:"key"`
	Model       string `json:"model"`
	Hour        string `json:"hour"`
	Day         string `json:"day"`
	Requests    uint64 `json:"requests"`
	TokensIn    uint64 `json:"tokens_in"`
	TokensOut   uint64 `json:"tokens_out"`
	CostUSD     string `json:"cost_usd"`
	CostNanoUSD int64  `json:"cost_nano_usd"`
}

// list reads every entity of a kind.
func list[T any](c *Console, r *http.Request, plural string) ([]T, error) {
	var out []T
	err := c.call(r, http.MethodGet, "/v1/control/"+plural, nil, &out)
	return out, err
}

// distribution reads the distribution status; ok is false on a node
// that runs none (404), which is no error.
func (c *Console) distribution(r *http.Request) (st status, ok bool, err error) {
	err = c.call(r, http.MethodGet, "/v1/control/distribution", nil, &st)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return st, false, nil
	}
	return st, err == nil, err
}

func (c *Console) usage(r *http.Request, q url.Values) ([]usageRow, error) {
	var resp struct {
		Rows []usageRow `json:"rows"`
	}
	err := c.call(r, http.MethodGet, "/v1/control/usage?"+q.Encode(), nil, &resp)
	return resp.Rows, err
}

// fail renders the page's error in place of its data.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, page, title string, err error) {
	c.render(w, r, statusOf(err), "error", &view{Title: title, Active: page, Error: err.Error()})
}

// overview is the world map.
func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	regions, err := list[region](c, r, "regions")
	if err != nil {
		c.fail(w, r, "map", "Fleet map", err)
		return
	}
	nodes, err := list[node](c, r, "nodes")
	if err != nil {
		c.fail(w, r, "map", "Fleet map", err)
		return
	}
	st, hasDist, err := c.distribution(r)
	if err != nil {
		c.fail(w, r, "map", "Fleet map", err)
		return
	}
	since := c.cfg.Now().Add(-24 * time.Hour).Truncate(time.Hour)
	traffic, err := c.usage(r, url.Values{"group_by": {"model"}, "from": {since.UTC().Format(time.RFC3339)}})
	if err != nil {
		c.fail(w, r, "map", "Fleet map", err)
		return
	}
	c.render(w, r, http.StatusOK, "map", &view{Title: "Fleet map", Active: "map",
		Data: buildFleet(regions, nodes, st, hasDist, traffic)})
}

func (c *Console) routesPage(w http.ResponseWriter, r *http.Request) {
	models, err := list[model](c, r, "models")
	if err != nil {
		c.fail(w, r, "routes", "Routes", err)
		return
	}
	routes, err := list[route](c, r, "routes")
	if err != nil {
		c.fail(w, r, "routes", "Routes", err)
		return
	}
	st, _, err := c.distribution(r)
	if err != nil {
		c.fail(w, r, "routes", "Routes", err)
		return
	}
	type row struct {
		Model      model
		Route      *route
		Placements []placement
	}
	var rows []row
	for _, m := range models {
		rw := row{Model: m}
		if i := slices.IndexFunc(routes, func(rt route) bool { return rt.Model == m.ID }); i >= 0 {
			rw.Route = &routes[i]
		}
		for _, p := range st.Placements {
			if p.Model == m.ID {
				rw.Placements = append(rw.Placements, p)
			}
		}
		rows = append(rows, rw)
	}
	c.render(w, r, http.StatusOK, "routes", &view{Title: "Routes", Active: "routes", Data: rows})
}

// explainForm is what the explorer's form offers.
type explainForm struct {
	Edges   []Edge
	Models  []model
	Regions []region
	Keys    []key
}

func (c *Console) explainPage(w http.ResponseWriter, r *http.Request) {
	var f explainForm
	var err error
	f.Edges = c.cfg.Edges
	if f.Models, err = list[model](c, r, "models"); err == nil {
		if f.Regions, err = list[region](c, r, "regions"); err == nil {
			f.Keys, err = list[key](c, r, "keys")
		}
	}
	if err != nil {
		c.fail(w, r, "explain", "Decision explorer", err)
		return
	}
	c.render(w, r, http.StatusOK, "explain", &view{Title: "Decision explorer", Active: "explain", Data: f})
}

// plan is an edge's dry-run answer (edge/gateway.Explanation).
type plan struct {
	Edge           string   `json:"-"`
	Client         string   `json:"-"`
	Model          string   `json:"model"`
	TableRevision  uint64   `json:"table_revision"`
	Strategy       string   `json:"strategy"`
	Targets        []choice `json:"targets"`
	Excluded       []choice `json:"excluded"`
	AllowedRegions []string `json:"allowed_regions"`
	Refusal        *struct {
		Status  int    `json:"status"`
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"refusal"`
	Access *struct {
		Refused string `json:"refused"`
	} `json:"access"`
}

type choice struct {
	Kind          string  `json:"kind"`
	Target        string  `json:"target"`
	ID            string  `json:"id"`
	UpstreamModel string  `json:"upstream_model"`
	Region        string  `json:"region"`
	Score         float64 `json:"score"`
	Breaker       string  `json:"breaker"`
	Reason        string  `json:"reason"`
	Skipped       string  `json:"skipped"`
}

// explainRun asks the chosen edge's dry-run endpoint and renders its
// plan as a fragment.
func (c *Console) explainRun(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fragment := func(status int, v *view) { c.renderFragment(w, r, status, "explain", "plan", v) }
	i := slices.IndexFunc(c.cfg.Edges, func(e Edge) bool { return e.ID == q.Get("edge") })
	if i < 0 {
		fragment(http.StatusBadRequest, &view{Error: "Pick an edge to decide as."})
		return
	}
	e := c.cfg.Edges[i]
	dq := url.Values{"model": {q.Get("model")}}
	client := "the edge's own region"
	switch loc := q.Get("location"); {
	case strings.HasPrefix(loc, "region:"):
		regions, err := list[region](c, r, "regions")
		if err != nil {
			fragment(statusOf(err), &view{Error: err.Error()})
			return
		}
		j := slices.IndexFunc(regions, func(g region) bool { return "region:"+g.ID == loc })
		if j < 0 {
			fragment(http.StatusBadRequest, &view{Error: "No such region " + strings.TrimPrefix(loc, "region:") + "."})
			return
		}
		dq.Set("lat", strconv.FormatFloat(regions[j].Latitude, 'f', -1, 64))
		dq.Set("lon", strconv.FormatFloat(regions[j].Longitude, 'f', -1, 64))
		client = fmt.Sprintf("in %s (%s, %s)", regions[j].ID, dq.Get("lat"), dq.Get("lon"))
	case loc == "latlon":
		dq.Set("lat", strings.TrimSpace(q.Get("lat")))
		dq.Set("lon", strings.TrimSpace(q.Get("lon")))
		client = fmt.Sprintf("at %s, %s", dq.Get("lat"), dq.Get("lon"))
	case loc == "country":
		dq.Set("country", strings.ToUpper(strings.TrimSpace(q.Get("country"))))
		client = "in " + dq.Get("country")
	}
	if k := q.Get("key"); k != "" {
		dq.Set("key", k)
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, e.URL+"/v1/meridian/route?"+dq.Encode(), nil)
	if err != nil {
		fragment(http.StatusBadRequest, &view{Error: err.Error()})
		return
	}
	resp, err := c.cfg.Client.Do(req)
	if err != nil {
		fragment(http.StatusBadGateway, &view{Error: fmt.Sprintf("Edge %s did not answer: %v", e.ID, err)})
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		fragment(http.StatusBadGateway, &view{Error: fmt.Sprintf("Edge %s: %v", e.ID, err)})
		return
	}
	if resp.StatusCode != http.StatusOK {
		// The edge answers in OpenAI's error shape.
		var oe struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &oe) == nil && oe.Error.Message != "" {
			msg = oe.Error.Message
		}
		fragment(http.StatusOK, &view{Error: fmt.Sprintf("Edge %s refused the dry run (%d): %s", e.ID, resp.StatusCode, msg)})
		return
	}
	var p plan
	if err := json.Unmarshal(body, &p); err != nil {
		fragment(http.StatusBadGateway, &view{Error: fmt.Sprintf("Edge %s: not a dry-run answer: %v", e.ID, err)})
		return
	}
	p.Edge, p.Client = e.ID, client
	fragment(http.StatusOK, &view{Data: p})
}

// spendData is the spend page's.
type spendData struct {
	By     string
	Range  string
	Chart  chart
	Totals []usageRow
}

// spend shows cost over time, grouped by tenant, key or model.
func (c *Console) spend(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	by := q.Get("by")
	if by != "key" && by != "model" {
		by = "tenant"
	}
	rng := q.Get("range")
	now := c.cfg.Now().UTC()
	var from time.Time
	bucket := "day"
	switch rng {
	case "24h":
		from, bucket = now.Add(-23*time.Hour).Truncate(time.Hour), "hour"
	case "30d":
		from = now.AddDate(0, 0, -29).Truncate(24 * time.Hour)
	default:
		rng, from = "7d", now.AddDate(0, 0, -6).Truncate(24*time.Hour)
	}
	rows, err := c.usage(r, url.Values{"group_by": {bucket + "," + by}, "from": {from.Format(time.RFC3339)}})
	if err != nil {
		c.fail(w, r, "spend", "Spend", err)
		return
	}
	totals, err := c.usage(r, url.Values{"group_by": {by}, "from": {from.Format(time.RFC3339)}})
	if err != nil {
		c.fail(w, r, "spend", "Spend", err)
		return
	}
	c.render(w, r, http.StatusOK, "spend", &view{Title: "Spend", Active: "spend",
		Data: spendData{By: by, Range: rng, Chart: buildChart(rows, by, bucket, from, now), Totals: totals}})
}

// keysData is the keys page's.
type keysData struct {
	Keys    []key
	Tenants []tenant
	// Created is a key just made, shown this once.
	Created, CreatedID string
}

func (c *Console) keysView(r *http.Request) (*view, error) {
	keys, err := list[key](c, r, "keys")
	if err != nil {
		return nil, err
	}
	tenants, err := list[tenant](c, r, "tenants")
	if err != nil {
		return nil, err
	}
	return &view{Title: "Keys", Active: "keys", Data: &keysData{Keys: keys, Tenants: tenants}}, nil
}

func (c *Console) keys(w http.ResponseWriter, r *http.Request) {
	v, err := c.keysView(r)
	if err != nil {
		c.fail(w, r, "keys", "Keys", err)
		return
	}
	c.render(w, r, http.StatusOK, "keys", v)
}

// idPattern is what the console accepts as a new key's ID before the
// API checks it again.
var idPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// createKey makes a random key, as `meridianctl key new` does: only its
// hash is stored, and the key is shown once.
func (c *Console) createKey(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	id := strings.TrimSpace(r.PostFormValue("id"))
	status, msg := http.StatusOK, ""
	var secret string
	if !idPattern.MatchString(id) {
		status, msg = http.StatusBadRequest, "A key ID is 1 to 63 letters, digits, dots, dashes or underscores."
	} else {
		var raw [24]byte
		rand.Read(raw[:])
		secret = "mk-" + hex.EncodeToString(raw[:])
		sum := sha256.Sum256([]byte(secret))
		k := map[string]any{"id": id, "hash": "sha256:" + hex.EncodeToString(sum[:])}
		if t := strings.TrimSpace(r.PostFormValue("tenant")); t != "" {
			k["tenant"] = t
		}
		if ms := splitList(r.PostFormValue("models")); len(ms) > 0 {
			k["allowed_models"] = ms
		}
		if v := strings.TrimSpace(r.PostFormValue("rpm")); v != "" {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				status, msg = http.StatusBadRequest, "Requests per minute must be a whole number."
			}
			k["rpm"] = n
		}
		if msg == "" {
			if err := c.call(r, http.MethodPost, "/v1/control/keys", k, nil); err != nil {
				status, msg, secret = statusOf(err), "Key not created: "+err.Error(), ""
			}
		}
	}
	c.keysFragment(w, r, status, msg, id, secret)
}

// keysFragment answers a key change with the refreshed keys section.
func (c *Console) keysFragment(w http.ResponseWriter, r *http.Request, status int, msg, id, secret string) {
	v, err := c.keysView(r)
	if err != nil {
		c.renderFragment(w, r, statusOf(err), "keys", "keys-section", &view{Error: err.Error(), Data: &keysData{}})
		return
	}
	v.Error = msg
	if secret != "" {
		d := v.Data.(*keysData)
		d.Created, d.CreatedID = secret, id
	}
	c.renderFragment(w, r, status, "keys", "keys-section", v)
}

// revokeKey deletes a key: every edge refuses it from the next table on
// (`meridianctl key rm`; disabling is the reversible form).
func (c *Console) revokeKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	status, msg := http.StatusOK, ""
	if err := c.call(r, http.MethodDelete, "/v1/control/keys/"+url.PathEscape(id), nil, nil); err != nil {
		status, msg = statusOf(err), "Key not revoked: "+err.Error()
	}
	c.keysFragment(w, r, status, msg, "", "")
}

// placementsData is the placements page's.
type placementsData struct {
	Placements []placement
	Nodes      []node
	Regions    []region
	// Written is true when the node runs no distribution: placements as
	// written, without nodes or readiness.
	Written bool
}

// placementsView lists the placements as the state holds them now, each
// with the nodes the last published table resolves it to and those
// ready. A placement the table does not hold yet, or holds elsewhere,
// has Pending set and no nodes.
func (c *Console) placementsView(r *http.Request) (*view, error) {
	st, ok, err := c.distribution(r)
	if err != nil {
		return nil, err
	}
	d := &placementsData{Written: !ok}
	if d.Placements, err = list[placement](c, r, "placements"); err != nil {
		return nil, err
	}
	for i := range d.Placements {
		p := &d.Placements[i]
		j := slices.IndexFunc(st.Placements, func(q placement) bool { return q.ID == p.ID })
		if j < 0 || st.Placements[j].Node != p.Node || st.Placements[j].Region != p.Region || st.Placements[j].Desired != p.Desired {
			p.Pending = ok
			continue
		}
		p.Nodes, p.Ready = st.Placements[j].Nodes, st.Placements[j].Ready
	}
	if d.Nodes, err = list[node](c, r, "nodes"); err != nil {
		return nil, err
	}
	if d.Regions, err = list[region](c, r, "regions"); err != nil {
		return nil, err
	}
	return &view{Title: "Placements", Active: "placements", Data: d}, nil
}

// awaitTable waits, up to a few seconds, until this node's last valid
// table (or its rejection) reaches revision idx, so that a page shown
// after a write shows where the edges are sent now.
func (c *Console) awaitTable(r *http.Request, idx uint64) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		st, ok, err := c.distribution(r)
		if err != nil || !ok || st.TableRevision >= idx || st.RejectedRevision >= idx || time.Now().After(deadline) {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Console) placements(w http.ResponseWriter, r *http.Request) {
	v, err := c.placementsView(r)
	if err != nil {
		c.fail(w, r, "placements", "Placements", err)
		return
	}
	c.render(w, r, http.StatusOK, "placements", v)
}

// movePlacement puts a placement on another node or region: "node:ID"
// or "region:ID". A move to a node wants one copy; a move to a region
// keeps the number wanted.
func (c *Console) movePlacement(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	id := r.PathValue("id")
	to := r.PostFormValue("to")
	status, msg, notice := http.StatusOK, "", ""
	var p map[string]any
	path := "/v1/control/placements/" + url.PathEscape(id)
	kind, dest, _ := strings.Cut(to, ":")
	switch {
	case dest == "" || (kind != "node" && kind != "region"):
		status, msg = http.StatusBadRequest, "Pick a node or a region to move the placement to."
	default:
		if err := c.call(r, http.MethodGet, path, nil, &p); err != nil {
			status, msg = statusOf(err), "Placement not moved: "+err.Error()
			break
		}
		delete(p, "node")
		delete(p, "region")
		p[kind] = dest
		if kind == "node" {
			p["desired"] = 1
		}
		var res struct {
			Index uint64 `json:"index"`
		}
		if err := c.call(r, http.MethodPut, path, p, &res); err != nil {
			status, msg = statusOf(err), "Placement not moved: "+err.Error()
		} else {
			c.awaitTable(r, res.Index)
			notice = fmt.Sprintf("Placement %s moved to %s %s (revision %d); the edges follow with that table.", id, kind, dest, res.Index)
		}
	}
	v, err := c.placementsView(r)
	if err != nil {
		v = &view{Data: &placementsData{}}
		status, msg = statusOf(err), err.Error()
	}
	v.Error, v.Notice = msg, notice
	c.renderFragment(w, r, status, "placements", "placements-section", v)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
