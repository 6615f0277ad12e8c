package channel

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// supervisor is the root actor "channels": it owns the set of configured
// channels (their records, secrets and account fingerprints), spawns one
// channel/<name> child per record, and keeps each child's last reported
// status so that listing never asks a thousand actors.
type supervisor struct {
	rt       *runtime
	children map[string]*child
	accounts map[string]string // account fingerprint -> channel name
	removing map[string]bool
	stopping bool
}

type child struct {
	rec     record
	pid     *actor.PID
	status  Status
	account string
	wg      *sync.WaitGroup // the child's goroutines, awaited before purging
	// crashed: its actor was stopped after repeated crashes; in cluster
	// mode ownership rounds do not respawn it until it is reconfigured.
	crashed bool
}

func newSupervisor(rt *runtime) *supervisor { return &supervisor{rt: rt} }

// removed is sent to the supervisor when a deleted channel's data is gone.
type removed struct {
	name  string
	err   error
	reply kernel.Replier
}

func (s *supervisor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		s.start(c)
	case *configure:
		c.Respond(s.configure(c, m.rec, m.secrets, m.account))
	case *remove:
		s.remove(c, m.name, kernel.ReplierOf(c))
	case *removed:
		delete(s.removing, m.name)
		if m.err != nil {
			s.rt.log.Error().Err(m.err).Str("channel", m.name).Msg("deleting a channel's data failed")
		}
		if m.err != nil {
			m.reply.Respond(m.err)
		} else {
			m.reply.Respond(true)
		}
	case *listChannels:
		out := make([]snapshot, 0, len(s.children))
		for _, ch := range s.children {
			out = append(out, snapshot{rec: ch.rec, status: ch.status})
		}
		c.Respond(out)
	case *getChannel:
		ch, ok := s.children[m.name]
		if !ok {
			c.Respond(snapshotResult{})
			return
		}
		c.Respond(snapshotResult{snap: snapshot{rec: ch.rec, status: ch.status}, ok: true})
	case *reload:
		c.Respond(s.reload(c, m.desired))
	case *statusChanged:
		// In cluster mode a channel stopped because it moved reports no
		// more: its status is the new host's.
		if ch, ok := s.children[m.name]; ok && (s.rt.clu == nil || ch.pid != nil) {
			node := ch.status.Node
			ch.status = m.status
			ch.status.Node = node
		}
	case *clusterView:
		s.applyCluster(c, m)
	case *actor.Stopping:
		s.stopping = true
	case *actor.Terminated:
		if s.stopping {
			return
		}
		// A child stopped without being removed: its supervisor gave up
		// after too many crashes. Keep it listed, in error, until it is
		// reconfigured; do not respawn it into a crash loop.
		for name, ch := range s.children {
			if ch.pid != nil && ch.pid.Equal(m.Who) {
				ch.status.State = StateError
				ch.status.LastError = "the channel actor crashed repeatedly and was stopped; reconfigure it to restart"
				ch.pid, ch.crashed = nil, true
				s.rt.log.Error().Str("channel", name).Msg("channel actor stopped after repeated crashes")
			}
		}
	}
}

// start (re)spawns every stored channel. It runs on first start and after
// a crash of the supervisor itself, which stops all children, so both look
// the same.
func (s *supervisor) start(c actor.Context) {
	s.children = map[string]*child{}
	s.accounts = map[string]string{}
	s.removing = map[string]bool{}
	if s.rt.clu != nil {
		// Cluster mode: the records are in etcd; ownership rounds
		// (ApplyCluster) say which to run here.
		return
	}
	var recs []record
	_, err := s.rt.records.EachOrQuarantine(func(_ string, r record) bool { recs = append(recs, r); return true })
	if err != nil {
		panic(err) // the store is unreadable: let supervision retry
	}
	for _, r := range recs {
		ch := &child{rec: r, wg: &sync.WaitGroup{}}
		if spec, ok := Lookup(r.Adapter); ok {
			if secrets, err := s.rt.loadSecrets(&r); err == nil {
				cfg := &Config{Name: r.Name, Adapter: r.Adapter, Spec: spec, Values: r.Values, Lists: r.Lists, Secrets: secrets}
				ch.account = accountKey(cfg)
			}
		}
		if ch.account != "" {
			if _, taken := s.accounts[ch.account]; taken {
				ch.status = Status{State: StateError, LastError: "another channel already uses this bot account (one poller per token)"}
				s.children[r.Name] = ch
				continue
			}
			s.accounts[ch.account] = r.Name
		}
		s.children[r.Name] = ch
		s.spawn(c, ch)
	}
	if len(recs) > 0 {
		s.rt.log.Info().Int("channels", len(recs)).Msg("channels started")
	}
}

func (s *supervisor) spawn(c actor.Context, ch *child) {
	name, wg := ch.rec.Name, ch.wg
	props := s.rt.k.Props(func() actor.Actor { return newChannelActor(s.rt, name, wg) })
	pid, err := c.SpawnNamed(props, "channel/"+name)
	if err != nil {
		ch.status = Status{State: StateError, LastError: "could not start: " + err.Error()}
		s.rt.log.Error().Err(err).Str("channel", name).Msg("spawning channel actor failed")
		return
	}
	ch.pid = pid
	if ch.status.State == "" {
		ch.status.State = StateConnecting
	}
}

// configure stores rec and its secrets and starts or restarts the channel.
// The store writes happen here, in the mailbox, on purpose: they are a few
// small synced writes on a rare admin call, and doing them here makes the
// account check and the write one atomic step.
func (s *supervisor) configure(c actor.Context, rec record, secrets map[string]string, account string) configureResult {
	name := rec.Name
	if s.removing[name] {
		return configureResult{err: kernel.Conflict("channel %s is being deleted; try again", name)}
	}
	if account != "" {
		if owner, ok := s.accounts[account]; ok && owner != name {
			return configureResult{err: kernel.Errorf(kernel.KindConflict, "account_in_use",
				"channel %s already uses this bot account; one poller per token is allowed", owner)}
		}
	}
	ch := s.children[name]
	if ch == nil && len(s.children) >= s.rt.max {
		return configureResult{err: kernel.Errorf(kernel.KindConflict, "too_many_channels",
			"%d channels are configured, the most allowed ([channel_limits] max_channels); delete one first", s.rt.max)}
	}
	if ch != nil && ch.rec.Epoch != "" {
		rec.Epoch = ch.rec.Epoch
	}
	if err := s.rt.persist(rec, secrets, ch, account); err != nil {
		return configureResult{err: err}
	}
	enabled := rec.Values[FieldEnabled] != "false"
	if s.rt.clu != nil {
		// Stored cluster-wide; the node that holds (or next takes) the
		// channel's lease runs it.
		created := ch == nil
		if created {
			ch = &child{wg: &sync.WaitGroup{}, status: Status{State: StateRemote}}
			s.children[name] = ch
		} else if ch.account != "" {
			delete(s.accounts, ch.account)
		}
		ch.rec, ch.account, ch.crashed = rec, account, false
		if account != "" {
			s.accounts[account] = name
		}
		if ch.pid != nil {
			c.Send(ch.pid, &reconfigure{})
		}
		return configureResult{activated: enabled, created: created}
	}
	if ch != nil {
		if ch.account != "" {
			delete(s.accounts, ch.account)
		}
		ch.rec, ch.account = rec, account
		if account != "" {
			s.accounts[account] = name
		}
		if ch.pid == nil {
			ch.status = Status{}
			s.spawn(c, ch)
		} else {
			c.Send(ch.pid, &reconfigure{})
		}
		return configureResult{activated: enabled}
	}
	ch = &child{rec: rec, account: account, wg: &sync.WaitGroup{}}
	s.children[name] = ch
	if account != "" {
		s.accounts[account] = name
	}
	s.spawn(c, ch)
	return configureResult{activated: enabled && ch.pid != nil, created: true}
}

// persist writes secrets to the vault (dropping ones no longer set) and
// the record to the store; in cluster mode both go to etcd, the secrets
// sealed with the vault key.
func (rt *runtime) persist(rec record, secrets map[string]string, prev *child, account string) error {
	if rt.clu != nil {
		return rt.persistCluster(rec, secrets, account)
	}
	for k, v := range secrets {
		if err := rt.vault.Put(secretName(rec.Name, k), []byte(v)); err != nil {
			return err
		}
	}
	if prev != nil {
		for _, k := range prev.rec.Secrets {
			if _, keep := secrets[k]; !keep {
				if err := rt.vault.Delete(secretName(rec.Name, k)); err != nil {
					return err
				}
			}
		}
	}
	return rt.records.Put(rec.Name, rec)
}

// loadSecrets reads a record's secrets from the vault.
func (rt *runtime) loadSecrets(rec *record) (map[string]string, error) {
	out := make(map[string]string, len(rec.Secrets))
	for _, k := range rec.Secrets {
		err := rt.withSecret(rec.Name, k, func(b []byte) error { out[k] = string(b); return nil })
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// remove stops the channel; once it and its goroutines are gone its data
// is deleted and reply answered (true, or the error).
func (s *supervisor) remove(c actor.Context, name string, reply kernel.Replier) {
	ch, ok := s.children[name]
	if !ok {
		if _, known := Lookup(name); known {
			reply.Respond(kernel.NotFound("channel %s is not configured", name))
		} else {
			reply.Respond(kernel.NotFound("Unknown channel: %s", name))
		}
		return
	}
	delete(s.children, name)
	if ch.account != "" {
		delete(s.accounts, ch.account)
	}
	s.removing[name] = true
	rec, wg, self := ch.rec, ch.wg, c.Self()
	purge := func() {
		go func() {
			waitTimeout(wg, 10*time.Second)
			s.rt.k.Root.Send(self, &removed{name: name, err: s.rt.purge(rec), reply: reply})
		}()
	}
	if ch.pid == nil {
		purge()
		return
	}
	c.ReenterAfter(c.StopFuture(ch.pid), func(any, error) { purge() })
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// purge deletes everything stored for a channel.
func (rt *runtime) purge(rec record) error {
	if rt.clu != nil {
		cl := rt.clu.store()
		if cl == nil {
			return errNoCluster
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := cl.DeleteChannel(ctx, rec.Name); err != nil {
			return err
		}
		rt.clu.mu.Lock()
		delete(rt.clu.recs, rec.Name)
		delete(rt.clu.raw, rec.Name)
		delete(rt.clu.sealed, rec.Name)
		rt.clu.mu.Unlock()
		return nil
	}
	var errs []error
	for _, k := range rec.Secrets {
		errs = append(errs, rt.vault.Delete(secretName(rec.Name, k)))
	}
	errs = append(errs, rt.badgerQ.purge(rec.Name))
	var cursorKeys []string
	page, err := rt.cursors.List(rec.Name+"/", "", 1000)
	errs = append(errs, err)
	cursorKeys = append(cursorKeys, page.IDs...)
	for _, k := range cursorKeys {
		errs = append(errs, rt.cursors.Delete(k))
	}
	errs = append(errs, rt.records.Delete(rec.Name))
	return errors.Join(errs...)
}

// reload reconciles the config-file channels with desired.
func (s *supervisor) reload(c actor.Context, desired []desiredChannel) ReloadResult {
	res := ReloadResult{Status: "ok", Started: []string{}, Stopped: []string{}, Restarted: []string{}, Unchanged: []string{}}
	want := map[string]bool{}
	for _, d := range desired {
		want[d.rec.Name] = true
	}
	names := slices.Sorted(maps.Keys(s.children))
	for _, name := range names {
		if ch := s.children[name]; ch.rec.Source == SourceConfig && !want[name] {
			s.remove(c, name, kernel.Replier{})
			res.Stopped = append(res.Stopped, name)
		}
	}
	for _, d := range desired {
		ch, exists := s.children[d.rec.Name]
		if exists && ch.pid != nil && s.same(ch, d) {
			res.Unchanged = append(res.Unchanged, d.rec.Name)
			continue
		}
		r := s.configure(c, d.rec, d.secrets, d.account)
		switch {
		case r.err != nil:
			res.Errors = append(res.Errors, "channels."+d.rec.Name+": "+kernel.PublicMessage(r.err))
		case r.created:
			res.Started = append(res.Started, d.rec.Name)
		default:
			res.Restarted = append(res.Restarted, d.rec.Name)
		}
	}
	sort.Strings(res.Started)
	return res
}

// same reports whether a running channel already has d's configuration.
func (s *supervisor) same(ch *child, d desiredChannel) bool {
	a, b := ch.rec, d.rec
	if a.Source != b.Source || a.Adapter != b.Adapter || a.AgentID != b.AgentID ||
		!maps.Equal(a.Values, b.Values) || !slices.Equal(a.Secrets, b.Secrets) || len(a.Lists) != len(b.Lists) {
		return false
	}
	for k, v := range a.Lists {
		if !slices.Equal(v, b.Lists[k]) {
			return false
		}
	}
	cur, err := s.rt.loadSecrets(&a)
	return err == nil && maps.Equal(cur, d.secrets)
}
