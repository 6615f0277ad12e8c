package agent

import (
	"context"
	"fmt"
	"strings"
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
	dir         ToolDirectory
	// meter and defaultModel serve Import (LibreFang's manifests).
	meter        *usage.Meter
	defaultModel string
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
	return &Agents{k: k, pid: pid, turnTimeout: wait, dir: opts.Directory, meter: meter, defaultModel: opts.DefaultModel}, nil
}

// Create spawns an agent.
func (a *Agents) Create(ctx context.Context, spec Spec, who Who) (*Agent, error) {
	warnings, err := checkTools(a.dir, spec.Tools)
	if err != nil {
		return nil, err
	}
	ag, err := kernel.Ask[*Agent](ctx, a.k, a.pid, &Create{Spec: spec, Who: who})
	return withWarnings(ag, warnings), err
}

// Get finds an agent by id or name.
func (a *Agents) Get(ctx context.Context, ref Ref) (*Agent, error) {
	return kernel.Ask[*Agent](ctx, a.k, a.pid, &Get{Ref: ref})
}

// List returns every agent, oldest first.
func (a *Agents) List(ctx context.Context) ([]Agent, error) {
	return kernel.Ask[[]Agent](ctx, a.k, a.pid, &List{})
}

// Update patches an agent.
func (a *Agents) Update(ctx context.Context, ref Ref, p Patch, who Who) (*Agent, error) {
	var warnings []string
	if p.Tools != nil {
		var err error
		if warnings, err = checkTools(a.dir, *p.Tools); err != nil {
			return nil, err
		}
	}
	ag, err := kernel.Ask[*Agent](ctx, a.k, a.pid, &Update{Ref: ref, Patch: p, Who: who})
	return withWarnings(ag, warnings), err
}

// checkTools is the rule for a manifest's tools: a glob (with *) is
// accepted, as it may match tools that come later; an exact name is
// accepted when fangd offers that tool now, or with a warning when it
// could be a tool of a configured MCP server that is not connected now;
// any other name is a 400 unknown_tool naming it, since it can never be
// offered (LibreFang's file_read or shell_exec, a typo).
func checkTools(dir ToolDirectory, tools []string) (warnings []string, err error) {
	if dir == nil {
		return nil, nil
	}
	for _, name := range tools {
		switch {
		case !toolRe.MatchString(name):
			// Not a name at all: the manifest's own check says so.
		case strings.Contains(name, "*") || dir.Offered(name):
		case dir.WaitingServer(name) != "":
			warnings = append(warnings, fmt.Sprintf("tool %q is not offered now: MCP server %s is not connected; the agent gets it once the server offers it", name, dir.WaitingServer(name)))
		default:
			return nil, kernel.Errorf(kernel.KindInvalid, "unknown_tool",
				"tools: %q is not a tool fangd offers (GET /api/approvals/policy lists them; MCP tools are named mcp_<server>_<tool>); use a glob such as \"mcp_github_*\" for tools that come later", name)
		}
	}
	return warnings, nil
}

func withWarnings(ag *Agent, warnings []string) *Agent {
	if ag != nil && len(warnings) > 0 {
		cp := *ag
		cp.Warnings = warnings
		return &cp
	}
	return ag
}

// Delete removes an agent.
func (a *Agents) Delete(ctx context.Context, ref Ref, who Who) (*Deleted, error) {
	return kernel.Ask[*Deleted](ctx, a.k, a.pid, &Delete{Ref: ref, Who: who})
}

// Send runs one turn and waits for its answer: until ctx's deadline, or
// the turn's own worst case when ctx has none.
func (a *Agents) Send(ctx context.Context, s Send) (*TurnResult, error) {
	ctx, cancel := kernel.WithDefaultTimeout(ctx, a.turnTimeout)
	defer cancel()
	return kernel.Ask[*TurnResult](ctx, a.k, a.pid, &s)
}

// Stream runs one turn like Send, handing its events to out as they
// happen (see Send.Stream); out must be read until Stream returns.
// Cancelling ctx cancels the turn: the provider call in flight is
// closed and the answer is a turn_cancelled error.
func (a *Agents) Stream(ctx context.Context, s Send, out chan<- StreamEvent) (*TurnResult, error) {
	s.Ctx, s.Stream = ctx, out
	// The ask outlives ctx: cancelling ctx cancels the turn, which then
	// answers turn_cancelled, so Stream returns once the turn has ended.
	askCtx, cancel := kernel.WithDefaultTimeout(context.WithoutCancel(ctx), a.turnTimeout)
	defer cancel()
	return kernel.Ask[*TurnResult](askCtx, a.k, a.pid, &s)
}
