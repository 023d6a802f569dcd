package engine

import (
	"context"
	"sort"
	"time"
)

// Placement. The set of models placed on the node changes at run time:
// Place records it and updates the models' states at once, and one
// reconciler goroutine (started by Start) makes Ollama match, one step
// at a time. Each step runs in a goroutine of its own so that the
// reconciler stays free to pass state changes on while a long create or
// pull runs, and to cancel a step that a newer Place or a restart of
// Ollama made pointless.
//
// Locking: e.mu is a leaf. Nothing that can block is called while it is
// held: not Ollama, not the OnChange callback.

// step is one thing the reconciler asks of Ollama.
type step struct {
	model  Model
	unload bool // drop the model from memory; otherwise create or pull and load it
}

// Place sets the models placed on this node: the full desired set, which
// replaces the previous one (the config's Models are the first). It
// returns at once, and never waits for Ollama.
//
// Models and Ready reflect the new set at once: a new model, or one
// whose GGUF file or quantization changed, is loading; a removed one is
// gone, and requests for it get a retryable 503, so the router fails
// over. The reconciler then unloads removed models and creates (or
// pulls) and loads new ones.
//
// Make before break: a removed model that is ready stays loaded and
// serving, marked Leaving, so that moving a placement to another node
// drops no request while the new copy loads. It goes when the node
// calls Release (the model is ready where it is now placed) or when
// Config.HandoffTimeout has passed, whichever comes first. Placing it
// again with the same spec makes it plain ready again. Calls made while it works coalesce: it
// goes on with the latest set. Before Start, Place only records the set.
//
// A model that does not validate is listed as failed. One with an
// invalid name, or whose name repeats an earlier one, is logged and
// skipped. A failed model is tried again when its spec changes or
// Ollama restarts, not on every Place of the same spec.
func (e *Engine) Place(models []Model) {
	e.mu.Lock()
	skipped := e.place(models)
	e.mu.Unlock()
	e.logSkipped(skipped)
	e.kick()
}

// skip is a model Place leaves out, and why.
type skip struct{ name, why string }

// logSkipped logs the models place skipped, once e.mu is released.
func (e *Engine) logSkipped(skipped []skip) {
	for _, s := range skipped {
		e.log.Warn("local engine: placement skipped", "model", s.name, "err", s.why)
	}
}

// place records the desired set and updates the models' states. It
// returns the models it skipped. e.mu is held.
func (e *Engine) place(models []Model) (skipped []skip) {
	prev := make(map[string]Model, len(e.want))
	for _, m := range e.want {
		prev[m.Name] = m
	}
	want := make([]Model, 0, len(models))
	placed := make(map[string]bool, len(models))
	set := func(name string, st ModelStatus) {
		if old, ok := e.models[name]; !ok || old != st {
			e.models[name] = st
			e.dirty = true
		}
		delete(e.retired, name)
		delete(e.leaving, name)
	}
	for _, m := range models {
		if placed[m.Name] {
			skipped = append(skipped, skip{m.Name, "placed twice; the first wins"})
			continue
		}
		field, msg := m.check()
		if field == ".name" {
			skipped = append(skipped, skip{m.Name, msg})
			continue
		}
		placed[m.Name] = true
		if msg != "" {
			set(m.Name, ModelStatus{State: StateFailed, Error: "invalid placement: " + msg})
			continue
		}
		want = append(want, m)
		if lv, ok := e.leaving[m.Name]; ok && lv.model == m {
			set(m.Name, ModelStatus{State: StateReady}) // back before it left
			continue
		}
		if old, ok := prev[m.Name]; !ok || old != m {
			set(m.Name, ModelStatus{State: StateLoading})
		}
	}
	for name, st := range e.models {
		switch {
		case placed[name] || st.Leaving:
			// Placed, or already leaving: its handoff keeps its deadline.
		case st.State == StateReady && e.cfg.HandoffTimeout > 0:
			e.models[name] = ModelStatus{State: StateReady, Leaving: true}
			e.leaving[name] = leaving{model: prev[name], until: time.Now().Add(e.cfg.HandoffTimeout)}
			e.dirty = true
		default:
			e.retire(name)
		}
	}
	e.want = want
	return skipped
}

// leaving is a removed model that still serves until its handoff ends.
type leaving struct {
	model Model     // the spec it was loaded with
	until time.Time // when it goes even if no other node has it ready
}

// retire drops a model from the served set: Do refuses it from now on,
// and the reconciler unloads it. e.mu is held.
func (e *Engine) retire(name string) {
	delete(e.models, name)
	delete(e.leaving, name)
	e.retired[name] = true
	e.dirty = true
}

// Leaving returns the sorted names of the models that lost their
// placement and still serve, waiting for their handoff to end.
func (e *Engine) Leaving() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.leaving))
	for name := range e.leaving {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Release ends a leaving model's handoff: the node learnt that the
// model is ready where it is placed now (or placed nowhere). The model
// stops serving at once and the reconciler unloads it. Release of a
// model that is not leaving does nothing.
func (e *Engine) Release(name string) {
	e.mu.Lock()
	_, ok := e.leaving[name]
	if ok {
		e.retire(name)
	}
	e.mu.Unlock()
	if ok {
		e.log.Info("local model handed off", "model", name)
		e.kick()
	}
}

// expire ends the handoffs whose time is up, and returns when the next
// one is due (zero when none is leaving).
func (e *Engine) expire(now time.Time) (next time.Time) {
	var gone []string
	e.mu.Lock()
	for name, lv := range e.leaving {
		switch {
		case !now.Before(lv.until):
			e.retire(name)
			gone = append(gone, name)
		case next.IsZero() || lv.until.Before(next):
			next = lv.until
		}
	}
	e.mu.Unlock()
	for _, name := range gone {
		e.log.Warn("local model: handoff timed out, unloading although no node it is placed on has it ready", "model", name, "handoff_timeout", e.cfg.HandoffTimeout)
	}
	return next
}

// wanted returns the placed model called name. e.mu is held.
func (e *Engine) wanted(name string) (Model, bool) {
	for _, m := range e.want {
		if m.Name == name {
			return m, true
		}
	}
	return Model{}, false
}

// kick wakes the reconciler. It never blocks: a wake-up already pending
// covers this one too, which is how Place calls coalesce.
func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// OnChange sets f to be called whenever a placed model's state changes
// (including when Place adds or removes one), so the node can gossip
// its ready models at once. f runs on the reconciler goroutine, never
// while the engine holds a lock; it must not block for long. Set it
// before Start; a later call replaces it.
func (e *Engine) OnChange(f func()) {
	e.mu.Lock()
	e.onChange = f
	e.mu.Unlock()
}

// ReadyModels returns the sorted names of the placed models that are
// loaded and serving, none while Ollama is down: what the edge gossips
// as ready.
func (e *Engine) ReadyModels() []string {
	if e.conn.Load() == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for name, st := range e.models {
		if st.State == StateReady {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// flush calls the OnChange callback if a state changed since the last
// call.
func (e *Engine) flush() {
	e.mu.Lock()
	f, dirty := e.onChange, e.dirty
	e.dirty = false
	e.mu.Unlock()
	if dirty && f != nil {
		f()
	}
}

// reconcile makes the Ollama in use match the placed models until ctx
// ends. It is the only goroutine that asks Ollama to create, pull, load
// or unload a model, so it never races with itself.
func (e *Engine) reconcile(ctx context.Context) {
	var cur *conn
	have := map[string]Model{} // what cur was given: loaded, or tried and failed
	for {
		if c := e.conn.Load(); c != cur {
			// A new server, or none: it has nothing loaded.
			cur = c
			clear(have)
			e.markLoading()
		}
		due := e.expire(time.Now())
		e.flush()
		var (
			s  step
			ok bool
		)
		if cur != nil {
			s, ok = e.next(have)
		}
		if !ok {
			var handoff <-chan time.Time
			if !due.IsZero() {
				handoff = time.After(time.Until(due))
			}
			select {
			case <-ctx.Done():
				return
			case <-e.wake:
			case <-handoff:
			}
			continue
		}
		if !e.run(ctx, cur, s, have) {
			return
		}
	}
}

// next picks the reconciler's next step: first unload what the server
// was given but is no longer placed (or is placed with another spec)
// and is not leaving, to free memory, then load what is placed and the server lacks, in
// placement order. A model still loading needs loading even if the
// server was given it: Place removed it and placed it again before the
// unload.
func (e *Engine) next(have map[string]Model) (step, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, m := range have {
		w, ok := e.wanted(name)
		if _, stay := e.leaving[name]; !ok && stay {
			continue
		}
		if !ok || w != m {
			return step{model: m, unload: true}, true
		}
	}
	for _, m := range e.want {
		if _, ok := have[m.Name]; !ok || e.models[m.Name].State == StateLoading {
			return step{model: m}, true
		}
	}
	return step{}, false
}

// run carries out step s on the server c and records the outcome. It
// returns false when ctx ended.
func (e *Engine) run(ctx context.Context, c *conn, s step, have map[string]Model) bool {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		if s.unload {
			done <- unload(sctx, c.client, s.model.Name)
			return
		}
		done <- ensure(sctx, c.client, s.model, e.cfg.KeepAlive, e.cfg.DataDir, e.log)
	}()
	var err error
	for waiting := true; waiting; {
		select {
		case err = <-done:
			waiting = false
		case <-e.wake:
			e.flush()
			if e.conn.Load() != c || (!s.unload && !e.stillWanted(s.model)) {
				cancel()
			}
		case <-ctx.Done():
			cancel()
			<-done
			return false
		}
	}
	if e.conn.Load() != c {
		return true // the server went away; its successor starts afresh
	}
	name := s.model.Name
	if s.unload {
		delete(have, name)
		if err != nil {
			// Not retried: the model stays in memory until Ollama
			// restarts, but it serves no request, as Do refuses it.
			e.log.Warn("local model: unload failed", "model", name, "err", err)
		} else {
			e.log.Info("local model unloaded", "model", name)
		}
		return true
	}
	// Recorded even when Place removed the model meanwhile: the next
	// step then unloads what the cancelled load may have left.
	have[name] = s.model
	e.mu.Lock()
	current := false
	if w, ok := e.wanted(name); ok && w == s.model {
		current = true
		st := ModelStatus{State: StateReady}
		if err != nil {
			st = ModelStatus{State: StateFailed, Error: err.Error()}
		}
		e.models[name] = st
		e.dirty = true
	}
	e.mu.Unlock()
	switch {
	case !current:
		// Place changed or removed it meanwhile; its state is Place's.
	case err != nil:
		e.log.Error("local model failed", "model", name, "err", err)
	default:
		e.log.Info("local model ready", "model", name, "took", time.Since(start).Round(time.Millisecond))
	}
	return true
}

// stillWanted reports whether m is placed, with this very spec.
func (e *Engine) stillWanted(m Model) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	w, ok := e.wanted(m.Name)
	return ok && w == m
}

// markLoading puts ready models back to loading when the server changes
// or goes: a new server has to load them again. Leaving models go: the
// new server would have to load them only to unload them.
func (e *Engine) markLoading() {
	e.mu.Lock()
	for name, st := range e.models {
		if st.Leaving {
			e.retire(name)
			continue
		}
		if st.State == StateReady {
			e.models[name] = ModelStatus{State: StateLoading}
			e.dirty = true
		}
	}
	e.mu.Unlock()
}
