package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/channel/adapters"
)

// configCheckCommand is `fangd config check`: the checks `fangd serve` and
// SIGHUP run on a config file, without starting anything (no store, no
// lock, nothing created under home).
type configCheckCommand struct {
	home, config string
	out, errOut  io.Writer
}

func (c *configCheckCommand) Run(_ context.Context) error {
	path, explicit := c.config, c.config != ""
	if !explicit {
		home, err := homePath(c.home)
		if err != nil {
			return err
		}
		path = filepath.Join(home, "config.toml")
	}
	problems := checkConfigFile(path, explicit)
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(c.errOut, p)
		}
		fmt.Fprintf(c.errOut, "%s: %d problem(s)\n", path, len(problems))
		return exitError(1)
	}
	fmt.Fprintf(c.out, "ok: %s\n", path)
	return nil
}

// checkConfigFile returns one line per problem in the file at path: TOML
// syntax and unknown keys, every value validate refuses, and each channel
// table that would be skipped.
func checkConfigFile(path string, explicit bool) []string {
	cfg, err := loadConfig(path, explicit)
	if err != nil {
		return []string{err.Error()}
	}
	cfg.applyEnv()
	var problems []string
	if err := cfg.validate(); err != nil {
		problems = append(problems, strings.Split(err.Error(), "\n")...)
	}
	return append(problems, channel.CheckTables(adapters.Builders(), cfg.Channels, nil)...)
}
