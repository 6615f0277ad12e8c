package a2a

import (
	"context"
	"time"

	"github.com/fangd/fangd/actors/kernel"
)

// LibreFang's client names an external agent by its discovery URL (POST
// /api/a2a/send {"url"}, POST /api/a2a/agents/{url}/approve); fangd's
// agent id is derived from the canonical URL, so the URL finds it.

// ExternalAgentByURL returns the discovered agent at rawURL (any spelling
// with the same canonical form); found is false when none was discovered
// there.
func (s *Service) ExternalAgentByURL(ctx context.Context, rawURL string) (a ExternalAgent, found bool, err error) {
	canon, err := CanonicalURL(rawURL)
	if err != nil {
		return a, false, err
	}
	if err := ctx.Err(); err != nil {
		return a, false, err
	}
	x, err := ask[*ExternalAgent](s, &getAgent{id: agentIDFor(canon)})
	if err != nil {
		if de := kernel.AsError(err); de != nil && de.Kind == kernel.KindNotFound {
			return a, false, nil
		}
		return a, false, err
	}
	return *x, true, nil
}

// LibreFangTask is a task in LibreFang's A2aTask shape ({id, sessionId,
// status: {state, message?}, messages, artifacts, agentId}).
type LibreFangTask = lfTask

// LibreFang returns the task in LibreFang's shape.
func (s *TaskSnapshot) LibreFang() LibreFangTask { return s.libreFang() }

// SyncWait is how long a blocking send waits for its task ([a2a] sync_wait).
func (s *Service) SyncWait() time.Duration { return s.opts.SyncWait }
