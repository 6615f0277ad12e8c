package agent

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/llm"
	"github.com/fangd/fangd/actors/usage"
	"github.com/fangd/fangd/store"
)

// Agents is the handle other packages use to reach the "agents" supervisor.
type Agents struct {
	k           *kernel.Kernel
	pid         *actor.PID
	turnTimeout time.Duration
}

// Start spawns the "agents" supervisor, which starts every stored agent.
// auditLog may be nil in tests.
func Start(k *kernel.Kernel, db *store.DB, auditLog *audit.Log, reg *llm.Registry, meter *usage.Meter, opts Options) (*Agents, error) {
	def := DefaultOptions()
	if opts.HistoryMessages < 2 {
		opts.HistoryMessages = def.HistoryMessages
	}
	if opts.HistoryChars <= 0 {
		opts.HistoryChars = def.HistoryChars
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = def.MaxSessions
	}
	if opts.QueuePerSession <= 0 {
		opts.QueuePerSession = def.QueuePerSession
	}
	if opts.MaxAgents <= 0 {
		opts.MaxAgents = def.MaxAgents
	}
	d := &deps{k: k, db: db, audit: auditLog, llm: reg, meter: meter, opts: opts,
		manifests: store.NewCollection[Manifest](db, "agents"),
		log:       k.Log.With().Str("component", "agents").Logger()}
	// Every message to an agent is forwarded through it.
	pid, err := k.SpawnRoot("agents", func() actor.Actor { return &supervisor{d: d} }, actor.WithDispatcher(kernel.PinnedDispatcher(300)))
	if err != nil {
		return nil, err
	}
	// A turn may wait for the ledger, the provider (up to its timeout),
	// the usage write and the audit log; with tools, for a tool run, a
	// human decision and the provider again. A turn that needs longer
	// (several gated calls) goes on after the caller gave up: its answer
	// lands in the session.
	wait := reg.Timeout() + 2*usage.SettleTimeout + audit.AppendTimeout
	if opts.Tools != nil {
		wait += toolTimeout + reg.Timeout()
	}
	if opts.Gate != nil {
		wait += opts.Gate.MaxWait()
	}
	return &Agents{k: k, pid: pid, turnTimeout: wait}, nil
}

func ask[T any](a *Agents, msg any) (T, error) {
	return kernel.Ask[T](a.k, a.pid, msg, kernel.DefaultAskTimeout)
}

// Create spawns an agent.
func (a *Agents) Create(spec Spec, who Who) (*Agent, error) {
	return ask[*Agent](a, &Create{Spec: spec, Who: who})
}

// Get finds an agent by id or name.
func (a *Agents) Get(ref Ref) (*Agent, error) { return ask[*Agent](a, &Get{Ref: ref}) }

// List returns every agent, oldest first.
func (a *Agents) List() ([]Agent, error) { return ask[[]Agent](a, &List{}) }

// Update patches an agent.
func (a *Agents) Update(ref Ref, p Patch, who Who) (*Agent, error) {
	return ask[*Agent](a, &Update{Ref: ref, Patch: p, Who: who})
}

// Delete removes an agent.
func (a *Agents) Delete(ref Ref, who Who) (*Deleted, error) {
	return ask[*Deleted](a, &Delete{Ref: ref, Who: who})
}

// Send runs one turn and waits for its answer.
func (a *Agents) Send(s Send) (*TurnResult, error) {
	return kernel.Ask[*TurnResult](a.k, a.pid, &s, a.turnTimeout)
}
