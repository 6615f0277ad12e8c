package a2a

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/google/uuid"

	"github.com/fangd/fangd/actors/kernel"
)

// Push notifications: a client registers a URL for a task (in
// SendMessage's configuration or with CreateTaskPushNotificationConfig);
// every later update of the task is handed to the webhook delivery engine
// as the spec's StreamResponse JSON. The token and credentials the client
// gave live in the vault, never in the record or in answers.

// maxPushTargets bounds the push targets of one task.
const maxPushTargets = 8

// pushTimeout bounds handing one delivery to the engine (a durable enqueue).
const pushTimeout = 5 * time.Second

type pushSecret struct {
	Token       string `json:"token,omitempty"`
	Credentials string `json:"credentials,omitempty"`
}

func pushSecretName(taskID, configID string) string { return "a2a/push/" + taskID + "/" + configID }

// pushEndpoint names one push target for the delivery engine.
func pushEndpoint(taskID, configID string) string { return "a2a-push/" + taskID + "/" + configID }

// forgetPush tells the delivery engine a push target is gone.
func (s *Service) forgetPush(taskID, configID string) {
	if s.pusher == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	if err := s.pusher.Forget(ctx, pushEndpoint(taskID, configID)); err != nil {
		s.log.Warn().Err(err).Str("task", taskID).Str("push_config", configID).Msg("a2a: the delivery engine did not release a push target")
	}
}

func pushIndex(rec *taskRecord, configID string) int {
	for i, p := range rec.Push {
		if p.ID == configID {
			return i
		}
	}
	return -1
}

func answerGetPush(rec *taskRecord, m *getPush) any {
	if !m.scope.allows(rec) {
		return errTaskNotFound(m.id)
	}
	i := pushIndex(rec, m.configID)
	if i < 0 {
		return errPushNotFound(rec.ID, m.configID)
	}
	p := rec.Push[i]
	return &p
}

func answerListPush(rec *taskRecord, sc scope) any {
	if !sc.allows(rec) {
		return errTaskNotFound(rec.ID)
	}
	out := make([]PushTarget, len(rec.Push))
	copy(out, rec.Push)
	return out
}

// validatePushTarget checks a client's push configuration; the URL is
// SSRF-checked now (a clear error) and again by the engine at delivery.
func (s *Service) validatePushTarget(ctx context.Context, p *PushTarget) error {
	if s.pusher == nil {
		return errPushUnsupported
	}
	if p.URL == "" {
		return errInvalidMessage("push notification config needs a url")
	}
	if _, err := s.guard.Check(ctx, p.URL); err != nil {
		return kernel.Errorf(kernel.KindInvalid, "push_url_blocked", "push notification url refused: %s", err.Error())
	}
	if p.ID == "" {
		p.ID = uuid.NewString()
	}
	if len(p.ID) > 64 || strings.ContainsAny(p.ID, "/ .\t\n") {
		return errInvalidMessage("push notification config id must be at most 64 characters without '/', '.' or spaces")
	}
	if p.AuthScheme != "" && !strings.EqualFold(p.AuthScheme, "bearer") && !strings.EqualFold(p.AuthScheme, "basic") {
		return errInvalidMessage("push notification authentication scheme %q is not supported; use Bearer or Basic", p.AuthScheme)
	}
	p.HasToken, p.HasAuth = p.Token != "", p.Credentials != ""
	return nil
}

func (t *taskBase) setPush(m *setPush) any {
	if !m.scope.allows(&t.rec) {
		return errTaskNotFound(m.id)
	}
	if t.rec.Direction != Inbound || t.svc.pusher == nil {
		return errPushUnsupported
	}
	if t.done || t.rec.State.Terminal() {
		return kernel.Errorf(kernel.KindConflict, "task_finished", "task %s has finished; it will send no more updates", t.rec.ID)
	}
	p := m.target
	i := pushIndex(&t.rec, p.ID)
	if i < 0 && len(t.rec.Push) >= maxPushTargets {
		return errInvalidMessage("a task may have at most %d push notification configs", maxPushTargets)
	}
	if err := t.storePushSecret(p); err != nil {
		return err
	}
	p.Token, p.Credentials = "", ""
	if i < 0 {
		t.rec.Push = append(t.rec.Push, p)
	} else {
		t.rec.Push[i] = p
		// Its URL or credentials may have changed: the engine's endpoint
		// for it is made anew on the next update.
		t.svc.forgetPush(t.rec.ID, p.ID)
	}
	if err := t.persist(); err != nil {
		return err
	}
	return &p
}

func (t *taskBase) storePushSecret(p PushTarget) error {
	name := pushSecretName(t.rec.ID, p.ID)
	if p.Token == "" && p.Credentials == "" {
		if t.svc.vault != nil {
			_ = t.svc.vault.Delete(name)
		}
		return nil
	}
	if t.svc.vault == nil {
		return kernel.Errorf(kernel.KindUnsupported, "no_vault", "push notification secrets need the vault, which is not configured")
	}
	raw, err := json.Marshal(pushSecret{Token: p.Token, Credentials: p.Credentials})
	if err != nil {
		return err
	}
	return t.svc.vault.Put(name, raw)
}

func (t *taskBase) deletePush(m *deletePush) any {
	if !m.scope.allows(&t.rec) {
		return errTaskNotFound(m.id)
	}
	i := pushIndex(&t.rec, m.configID)
	if i < 0 {
		return errPushNotFound(t.rec.ID, m.configID)
	}
	t.rec.Push = append(t.rec.Push[:i:i], t.rec.Push[i+1:]...)
	if t.svc.vault != nil {
		_ = t.svc.vault.Delete(pushSecretName(t.rec.ID, m.configID))
	}
	t.svc.forgetPush(t.rec.ID, m.configID)
	if err := t.persist(); err != nil {
		return err
	}
	return &ack{}
}

// push hands ev to the delivery engine for every push target. Each
// delivery's id is stable for this update, so a receiver can deduplicate
// the engine's retries. A failure to enqueue is logged; the task goes on.
func (t *taskBase) push(ev a2a.Event) {
	if t.svc.pusher == nil || len(t.rec.Push) == 0 {
		return
	}
	body, err := json.Marshal(a2a.StreamResponse{Event: ev})
	if err != nil {
		t.svc.log.Error().Err(err).Str("task", t.rec.ID).Msg("a2a: could not encode a push notification")
		return
	}
	// The id names the update by the stored version it follows and its
	// kind: stable across the engine's retries and across a restart.
	version := t.rec.UpdatedAt.UnixNano()
	kind := eventKind(ev)
	for _, p := range t.rec.Push {
		headers := map[string]string{"Content-Type": "application/json"}
		if t.svc.vault != nil && (p.HasToken || p.HasAuth) {
			_ = t.svc.vault.With(pushSecretName(t.rec.ID, p.ID), func(secret []byte) error {
				var ps pushSecret
				if err := json.Unmarshal(secret, &ps); err != nil {
					return err
				}
				if ps.Token != "" {
					headers["A2A-Notification-Token"] = ps.Token
				}
				if ps.Credentials != "" {
					scheme := "Bearer"
					if strings.EqualFold(p.AuthScheme, "basic") {
						scheme = "Basic"
					}
					headers["Authorization"] = scheme + " " + ps.Credentials
				}
				return nil
			})
		}
		d := PushDelivery{
			ID:       fmt.Sprintf("a2a-%s-%s-%d-%s", t.rec.ID, p.ID, version, kind),
			Endpoint: pushEndpoint(t.rec.ID, p.ID),
			Type:     "a2a.task." + kind,
			URL:      p.URL,
			Headers:  headers,
			Body:     body,
		}
		ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
		err := t.svc.pusher.Push(ctx, d)
		cancel()
		if err != nil {
			t.svc.log.Warn().Err(err).Str("task", t.rec.ID).Str("push_config", p.ID).Msg("a2a: push notification not queued")
		}
	}
}

func eventKind(ev a2a.Event) string {
	switch ev.(type) {
	case *a2a.Task:
		return "task"
	case *a2a.TaskStatusUpdateEvent:
		return "status"
	case *a2a.TaskArtifactUpdateEvent:
		return "artifact"
	}
	return "message"
}
