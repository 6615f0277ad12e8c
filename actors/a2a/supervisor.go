package a2a

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store"
)

// supervisor is the "a2a" actor: it spawns and finds task actors, answers
// for finished tasks from the store, owns the registry of external agents
// and the idempotency records, and sweeps out tasks past retention.
type supervisor struct {
	svc  *Service
	log  zerolog.Logger
	live map[string]*actor.PID
	// byPID maps a live child's actor id back to its task id.
	byPID  map[string]string
	agents map[string]ExternalAgent
	tasks  *store.Collection[taskRecord]
	ext    *store.Collection[ExternalAgent]
	idem   *store.Collection[idemRecord]
	timer  *time.Timer
	// sweeping is set while a sweep goroutine runs.
	sweeping bool
}

func newSupervisor(svc *Service) *supervisor {
	return &supervisor{
		svc:   svc,
		log:   svc.log,
		tasks: store.NewCollection[taskRecord](svc.db, tasksCollection),
		ext:   store.NewCollection[ExternalAgent](svc.db, agentsCollection),
		idem:  store.NewCollection[idemRecord](svc.db, idemCollection),
	}
}

func (s *supervisor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		s.live, s.byPID = map[string]*actor.PID{}, map[string]string{}
		if err := s.loadAgents(); err != nil {
			panic(err)
		}
		if err := s.restore(c); err != nil {
			panic(err)
		}
		s.scheduleSweep(c)
	case *actor.Stopping:
		if s.timer != nil {
			s.timer.Stop()
		}
	case *actor.Terminated:
		// A child stopped without saying it had finished (its supervisor
		// gave up on it): requests for it are answered from the store.
		if id, ok := s.byPID[m.Who.Id]; ok {
			delete(s.byPID, m.Who.Id)
			if pid := s.live[id]; pid != nil && pid.Equal(m.Who) {
				delete(s.live, id)
			}
		}
	case *createTask:
		s.create(c, m)
	case *getTask:
		s.forwardOr(c, m.id, func(rec *taskRecord) {
			if !m.scope.allows(rec) {
				c.Respond(errTaskNotFound(m.id))
				return
			}
			c.Respond(rec.snapshot())
		})
	case *cancelTask:
		s.forwardOr(c, m.id, func(rec *taskRecord) {
			if !m.scope.allows(rec) {
				c.Respond(errTaskNotFound(m.id))
				return
			}
			c.Respond(finishedCancelAnswer(rec))
		})
	case *subscribeTask:
		s.forwardOr(c, m.id, func(rec *taskRecord) {
			close(m.sub.ch)
			if !m.scope.allows(rec) {
				c.Respond(errTaskNotFound(m.id))
				return
			}
			c.Respond(rec.snapshot())
		})
	case *unsubscribe:
		if pid, ok := s.live[m.id]; ok {
			c.Forward(pid)
		}
	case *setPush:
		s.forwardOr(c, m.id, func(rec *taskRecord) {
			if !m.scope.allows(rec) {
				c.Respond(errTaskNotFound(m.id))
				return
			}
			c.Respond(kernel.Errorf(kernel.KindConflict, "task_finished", "task %s has finished; it will send no more updates", m.id))
		})
	case *getPush:
		s.forwardOr(c, m.id, func(rec *taskRecord) { c.Respond(answerGetPush(rec, m)) })
	case *listPush:
		s.forwardOr(c, m.id, func(rec *taskRecord) { c.Respond(answerListPush(rec, m.scope)) })
	case *deletePush:
		s.forwardOr(c, m.id, func(rec *taskRecord) {
			if !m.scope.allows(rec) {
				c.Respond(errTaskNotFound(m.id))
				return
			}
			c.Respond(s.deleteStoredPush(rec, m.configID))
		})
	case *listTasks:
		page, err := s.list(m)
		if err != nil {
			c.Respond(err)
			return
		}
		c.Respond(page)
	case *taskFinished:
		if pid, ok := s.live[m.id]; ok {
			delete(s.live, m.id)
			delete(s.byPID, pid.Id)
			// Poison, not Stop: requests forwarded before this point are
			// still in the child's mailbox and get answered first.
			c.Poison(pid)
		}
	case *putAgent:
		s.putAgent(c, m)
	case *getAgent:
		a, ok := s.agents[m.id]
		if !ok {
			c.Respond(errAgentNotFound(m.id))
			return
		}
		c.Respond(&a)
	case *listAgents:
		out := make([]ExternalAgent, 0, len(s.agents))
		for _, a := range s.agents {
			out = append(out, a)
		}
		sort.Slice(out, func(i, j int) bool {
			return out[i].Name < out[j].Name || out[i].Name == out[j].Name && out[i].ID < out[j].ID
		})
		c.Respond(out)
	case *deleteAgent:
		s.deleteAgent(c, m)
	case *sweep:
		s.startSweep(c)
	case *sweepDone:
		s.sweeping = false
		if m.err != nil {
			s.log.Warn().Err(m.err).Msg("a2a retention sweep failed")
		} else if m.tasks+m.idem > 0 {
			s.log.Info().Int("tasks", m.tasks).Int("idempotency_keys", m.idem).Msg("a2a retention sweep removed expired records")
		}
		s.scheduleSweep(c)
	}
}

// forwardOr sends the current message to the task's actor if it is live,
// or else loads the stored record and calls finished with it.
func (s *supervisor) forwardOr(c actor.Context, id string, finished func(rec *taskRecord)) {
	if pid, ok := s.live[id]; ok {
		c.Forward(pid)
		return
	}
	rec, err := s.tasks.Get(id)
	if errors.Is(err, store.ErrNotFound) {
		if m, ok := c.Message().(*subscribeTask); ok {
			close(m.sub.ch)
		}
		c.Respond(errTaskNotFound(id))
		return
	}
	if err != nil {
		if m, ok := c.Message().(*subscribeTask); ok {
			close(m.sub.ch)
		}
		c.Respond(err)
		return
	}
	finished(&rec)
}

// finishedCancelAnswer is the answer to cancelling a task that is no
// longer running: cancelling twice is harmless, anything else finished is
// the spec's TaskNotCancelableError.
func finishedCancelAnswer(rec *taskRecord) any {
	if rec.State == a2a.TaskStateCanceled {
		return rec.snapshot()
	}
	if !rec.State.Terminal() {
		// Stored as running but no actor runs it: only possible between a
		// child dying and the store catching up.
		return kernel.Errorf(kernel.KindUnavailable, "task_unavailable", "task %s is not running and has no final state yet", rec.ID)
	}
	return errTaskNotCancelable(rec)
}

func (s *supervisor) create(c actor.Context, m *createTask) {
	rec := m.rec
	if _, ok := s.live[rec.ID]; ok {
		c.Respond(kernel.Conflict("task %s already exists", rec.ID))
		return
	}
	stored := false
	if rec.Direction == Outbound {
		// The answer to POST /api/a2a/send acknowledges the task, so it is
		// on disk (with its idempotency record, atomically) before that.
		if m.idem != nil {
			prev, err := s.idem.Get(m.idem.key)
			switch {
			case err == nil && prev.BodyHash == m.idem.rec.BodyHash:
				c.Respond(&idemReplay{TaskID: prev.TaskID, AgentID: prev.AgentID, State: prev.State})
				return
			case err == nil:
				c.Respond(kernel.Errorf(kernel.KindConflict, "idempotency_key_reused", "this Idempotency-Key was already used with a different request body"))
				return
			case !errors.Is(err, store.ErrNotFound):
				c.Respond(err)
				return
			}
		}
		if err := s.storeNew(rec, m.idem); err != nil {
			c.Respond(err)
			return
		}
		stored = true
	}
	pid, err := s.spawn(c, rec, m.sub, stored, m.blocking && len(rec.Push) == 0)
	if err != nil {
		c.Respond(err)
		return
	}
	s.track(rec.ID, pid)
	s.svc.metrics.created.WithLabelValues(rec.Direction).Inc()
	c.Respond(rec.snapshot())
}

// storeNew writes a new outbound record and its idempotency record in one
// synced transaction.
func (s *supervisor) storeNew(rec *taskRecord, idem *idemEntry) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	var idemRaw []byte
	if idem != nil {
		if idemRaw, err = json.Marshal(idem.rec); err != nil {
			return err
		}
	}
	return s.svc.db.Update(func(tx *store.Txn) error {
		if err := tx.Set(taskKey(rec.ID), raw); err != nil {
			return err
		}
		if idem != nil {
			return tx.Set([]byte(idemCollection+"/"+idem.key), idemRaw)
		}
		return nil
	})
}

func (s *supervisor) track(id string, pid *actor.PID) {
	s.live[id] = pid
	s.byPID[pid.Id] = id
}

func taskKey(id string) []byte { return []byte(tasksCollection + "/" + id) }

// spawn starts a task's actor; deferFirst lets an inbound task hold its
// first write back (inboundTask.deferFirst).
func (s *supervisor) spawn(c actor.Context, rec *taskRecord, sub *subscriber, stored, deferFirst bool) (*actor.PID, error) {
	var subs []*subscriber
	if sub != nil {
		subs = []*subscriber{sub}
	}
	var producer actor.Producer
	first := true
	initial := rec.clone()
	switch rec.Direction {
	case Inbound:
		producer = func() actor.Actor {
			t := &inboundTask{taskBase: newTaskBase(s.svc, initial, subs, stored, first), deferFirst: deferFirst && first}
			first, subs = false, nil
			return t
		}
	case Outbound:
		var agent *ExternalAgent
		if a, ok := s.agents[rec.AgentID]; ok {
			agent = &a
		}
		producer = func() actor.Actor {
			t := &outboundTask{taskBase: newTaskBase(s.svc, initial, subs, stored, first), agent: agent}
			first, subs = false, nil
			return t
		}
	default:
		return nil, fmt.Errorf("task %s has unknown direction %q", rec.ID, rec.Direction)
	}
	return c.SpawnNamed(s.svc.taskProps(producer), "a2a-task/"+rec.ID)
}

// restore runs when the supervisor starts (daemon start or its own
// restart): every unfinished task is brought back. An inbound task that
// was running lost its turn with the process; it is resumed if configured,
// and otherwise failed with a reason that says so. Outbound tasks resume
// watching their peer.
func (s *supervisor) restore(c actor.Context) error {
	var resume []taskRecord
	var failed []taskRecord
	now := time.Now().UTC()
	_, err := s.tasks.EachOrQuarantine(func(id string, rec taskRecord) bool {
		if rec.State.Terminal() {
			return true
		}
		if _, ok := s.live[id]; ok {
			return true
		}
		switch {
		case rec.Direction == Outbound, s.svc.opts.ResumeOnRestart:
			resume = append(resume, rec)
		case rec.State == a2a.TaskStateInputRequired || rec.State == a2a.TaskStateAuthRequired:
			// Waiting for the client, not running: nothing was lost.
		default:
			rec.State = a2a.TaskStateFailed
			rec.Reason = "fangd restarted while this task was running; its turn was lost (set [a2a] resume_on_restart = true to re-run such tasks)"
			rec.UpdatedAt = now
			failed = append(failed, rec)
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("a2a: load tasks: %w", err)
	}
	for i := range failed {
		if err := s.tasks.Put(failed[i].ID, failed[i]); err != nil {
			return fmt.Errorf("a2a: fail interrupted task %s: %w", failed[i].ID, err)
		}
	}
	for i := range resume {
		pid, err := s.spawn(c, &resume[i], nil, true, false)
		if err != nil {
			return err
		}
		s.track(resume[i].ID, pid)
	}
	if len(failed)+len(resume) > 0 {
		s.log.Info().Int("failed", len(failed)).Int("resumed", len(resume)).Msg("a2a tasks interrupted by the last stop")
	}
	return nil
}

// list pages through stored tasks newest first. Task ids are time-ordered
// (UUIDv7), so key order is creation order; the page token is the last id
// returned.
func (s *supervisor) list(m *listTasks) (*TaskPage, error) {
	f := m.filter
	size := f.PageSize
	if size <= 0 {
		size = 50
	}
	page := &TaskPage{}
	prefix := []byte(tasksCollection + "/")
	var start []byte
	if f.PageToken != "" {
		// Reverse iteration seeks the largest key <= start: the token's own
		// record, which the callback skips.
		start = append(bytes.Clone(prefix), f.PageToken...)
	}
	err := s.svc.db.View(func(tx *store.Txn) error {
		return tx.Iterate(prefix, start, true, func(k, raw []byte) (bool, error) {
			id := string(k[len(prefix):])
			if f.PageToken != "" && id >= f.PageToken {
				return true, nil
			}
			var rec taskRecord
			if err := json.Unmarshal(raw, &rec); err != nil {
				return false, fmt.Errorf("decode %s: %w", k, err)
			}
			if !m.scope.allows(&rec) || !f.matches(&rec) {
				return true, nil
			}
			page.Total++
			if len(page.Tasks) < size {
				page.Tasks = append(page.Tasks, rec.snapshot())
				if len(page.Tasks) == size {
					page.NextToken = id
				}
			}
			return true, nil
		})
	})
	if err != nil {
		return nil, err
	}
	if len(page.Tasks) < size || page.Total == len(page.Tasks) {
		page.NextToken = ""
	}
	return page, nil
}

func (f *ListFilter) matches(r *taskRecord) bool {
	switch {
	case f.Direction != "" && r.Direction != f.Direction,
		f.ContextID != "" && r.ContextID != f.ContextID,
		f.State != "" && r.State != f.State,
		f.AgentID != "" && r.AgentID != f.AgentID,
		!f.After.IsZero() && !r.UpdatedAt.After(f.After):
		return false
	}
	return true
}

func (s *supervisor) deleteStoredPush(rec *taskRecord, configID string) any {
	i := pushIndex(rec, configID)
	if i < 0 {
		return errPushNotFound(rec.ID, configID)
	}
	rec.Push = append(rec.Push[:i:i], rec.Push[i+1:]...)
	if err := s.tasks.Put(rec.ID, *rec); err != nil {
		return err
	}
	if s.svc.vault != nil {
		_ = s.svc.vault.Delete(pushSecretName(rec.ID, configID))
	}
	s.svc.forgetPush(rec.ID, configID)
	return &ack{}
}

// scheduleSweep arms the retention timer.
func (s *supervisor) scheduleSweep(c actor.Context) {
	if s.svc.opts.Retention <= 0 {
		return
	}
	self, root := c.Self(), c.ActorSystem().Root
	s.timer = time.AfterFunc(s.svc.opts.SweepInterval, func() { root.Send(self, &sweep{}) })
}

// startSweep deletes, in a goroutine, finished tasks last updated before
// the retention horizon and idempotency records older than a day. Records
// of finished tasks never change again, so deleting them outside the
// actor races with nothing.
func (s *supervisor) startSweep(c actor.Context) {
	if s.sweeping {
		return
	}
	s.sweeping = true
	self, root := c.Self(), c.ActorSystem().Root
	horizon := time.Now().Add(-s.svc.opts.Retention)
	idemHorizon := time.Now().Add(-idemRetention)
	db := s.svc.db
	vault := s.svc.vault
	go func() {
		var done sweepDone
		var expired []taskRecord
		done.err = s.tasks.Each(func(id string, rec taskRecord) bool {
			if rec.State.Terminal() && rec.UpdatedAt.Before(horizon) {
				expired = append(expired, rec)
			}
			return true
		})
		var oldKeys []string
		if done.err == nil {
			done.err = s.idem.Each(func(id string, r idemRecord) bool {
				if r.CreatedAt.Before(idemHorizon) {
					oldKeys = append(oldKeys, id)
				}
				return true
			})
		}
		for len(expired) > 0 && done.err == nil {
			n := min(len(expired), 500)
			chunk := expired[:n]
			expired = expired[n:]
			done.err = db.Update(func(tx *store.Txn) error {
				for _, rec := range chunk {
					if err := tx.Delete(taskKey(rec.ID)); err != nil {
						return err
					}
				}
				return nil
			})
			if done.err == nil {
				done.tasks += n
				for _, rec := range chunk {
					for _, p := range rec.Push {
						if vault != nil {
							_ = vault.Delete(pushSecretName(rec.ID, p.ID))
						}
						s.svc.forgetPush(rec.ID, p.ID)
					}
				}
			}
		}
		for len(oldKeys) > 0 && done.err == nil {
			n := min(len(oldKeys), 500)
			chunk := oldKeys[:n]
			oldKeys = oldKeys[n:]
			done.err = db.Update(func(tx *store.Txn) error {
				for _, k := range chunk {
					if err := tx.Delete([]byte(idemCollection + "/" + k)); err != nil {
						return err
					}
				}
				return nil
			})
			if done.err == nil {
				done.idem += n
			}
		}
		root.Send(self, &done)
	}()
}

// idemRetention is how long an Idempotency-Key is remembered.
const idemRetention = 24 * time.Hour
