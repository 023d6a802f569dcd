package api

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/usage"
)

// UsageResponse is GET /v1/control/usage: the usage totals matching the
// query, grouped, from this node's state (or the leader's with
// ?consistent). Costs are exact: cost_nano_usd is an integer, cost_usd
// the same amount as a decimal string.
type UsageResponse struct {
	Rows []usage.Row `json:"rows"`
	// Through is the time of the last usage batch the totals include.
	Through time.Time `json:"through,omitzero"`
}

// usageQuery serves GET /v1/control/usage?tenant=&key=&model=&from=&to=&group_by=.
func (s *Server) usageQuery(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	uq := usage.Query{Tenant: q.Get("tenant"), Key: q.Get("key"), Model: q.Get("model")}
	for _, f := range []struct {
		name string
		to   *time.Time
	}{{"from", &uq.From}, {"to", &uq.To}} {
		if v := q.Get(f.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Field: f.name, Message: "must be an RFC 3339 time such as 2026-12-01T00:00:00Z"})
				return
			}
			*f.to = t
		}
	}
	for _, g := range q["group_by"] {
		for _, p := range strings.Split(g, ",") {
			if p = strings.TrimSpace(p); p != "" {
				uq.GroupBy = append(uq.GroupBy, p)
			}
		}
	}
	if err := uq.Validate(); err != nil {
		field := "group_by"
		if !uq.From.IsZero() && !uq.To.IsZero() && !uq.From.Before(uq.To) {
			field = "from"
		}
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Field: field, Message: strings.TrimPrefix(err.Error(), usage.ErrBadQuery.Error()+": ")})
		return
	}
	if !s.read(w, r) {
		return
	}
	st := s.node.FSM().State()
	rows, err := uq.Run(st)
	if err != nil && errors.Is(err, usage.ErrBadQuery) {
		writeError(w, http.StatusBadRequest, &fsm.Error{Code: fsm.CodeInvalid, Message: err.Error()})
		return
	}
	resp := UsageResponse{Rows: rows}
	if ms := st.UsageNow(); ms > 0 {
		resp.Through = time.UnixMilli(ms).UTC()
	}
	s.setIndex(w)
	writeJSON(w, http.StatusOK, resp)
}
