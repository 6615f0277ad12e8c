package agent

import (
	"context"
	"strings"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/usage"
)

// ImportSpec is POST /api/agents in LibreFang's shapes: a manifest, or a
// template's name, with an optional name (LibreFang's override) and model
// (fangd's: the model for a manifest that says "default").
type ImportSpec struct {
	ManifestTOML string
	Template     string
	Name, Model  string
}

// Import creates an agent from a LibreFang manifest or shipped template,
// with its [resources] cost caps as the agent's budget. A non-empty
// manifest wins over a template, as in LibreFang. The answer's warnings
// name the manifest keys that have no effect in fangd.
func (a *Agents) Import(ctx context.Context, is ImportSpec, who Who) (*Agent, error) {
	text, from := is.ManifestTOML, "manifest_toml"
	if strings.TrimSpace(text) == "" {
		if is.Template == "" {
			return nil, kernel.Errorf(kernel.KindInvalid, "invalid_manifest", "give manifest_toml (an agent.toml) or template (GET /api/templates lists them)")
		}
		var err error
		if text, err = Template(is.Template); err != nil {
			return nil, err
		}
		from = "template " + is.Template
	}
	def := a.defaultModel
	if is.Model != "" {
		def = is.Model
	}
	imp, err := ImportManifest(text, def)
	if err != nil {
		return nil, prefix(err, from)
	}
	if is.Model != "" {
		imp.Spec.Model = is.Model
	}
	if n := strings.TrimSpace(is.Name); n != "" {
		imp.Spec.Name = n
	}
	budget := imp.DailyUSD != nil || imp.MonthlyUSD != nil
	if budget && a.meter == nil {
		return nil, kernel.Unavailable("the manifest sets a budget and budgets are not available")
	}
	ag, err := a.Create(ctx, imp.Spec, who)
	if err != nil {
		return nil, err
	}
	if budget {
		// The agent exists only with its caps: if they cannot be stored,
		// it goes again rather than run unbudgeted.
		if _, err := a.meter.SetAgentBudget(ctx, usage.SetAgentBudget{AgentID: ag.ID, AgentName: ag.Name,
			DailyLimitUSD: imp.DailyUSD, MonthlyLimitUSD: imp.MonthlyUSD}); err != nil {
			if _, derr := a.Delete(context.WithoutCancel(ctx), Ref{ID: ag.ID}, who); derr != nil {
				return nil, kernel.Errorf(kernel.KindInternal, "budget_failed", "agent %s was created but its budget could not be stored (%v) nor the agent removed (%v)", ag.ID, err, derr)
			}
			return nil, err
		}
	}
	if w := imp.Warnings(); len(w) > 0 {
		cp := *ag
		cp.Warnings = append(append([]string{}, ag.Warnings...), w...)
		ag = &cp
	}
	return ag, nil
}

// prefix says which manifest an import error is about (a template's is
// fangd's own, a request's is the caller's).
func prefix(err error, from string) error {
	if ke := kernel.AsError(err); ke != nil && from != "manifest_toml" {
		cp := *ke
		cp.Msg = from + ": " + ke.Msg
		return &cp
	}
	return err
}
