package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"

	"github.com/alertd/alertd/internal/app"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/store"
)

const storeUsage = `usage:
  alertd store check   -config FILE                    is the store file sound?
  alertd store salvage -config FILE [-from DAMAGED]    recover a damaged store now

check reads the store file and says ok, or what is wrong with it (exit 1).
salvage does what alertd run does with a damaged store: moves it aside
untouched and starts a fresh one with what could be read of it. With -from,
it copies what can be read of DAMAGED (a file moved aside earlier) into the
store, keeping the entries the store already has. alertd must be stopped.
`

func cmdStore(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, storeUsage)
		return 2
	}
	action := args[0]
	if action != "check" && action != "salvage" {
		fmt.Fprintf(stderr, "alertd store: unknown action %q\n\n%s", action, storeUsage)
		return 2
	}
	fs := newFlags("store "+action, stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	from := fs.String("from", "", "salvage: a damaged store file to copy from")
	pos, code := parseInterleaved(fs, args[1:])
	if code >= 0 {
		return code
	}
	switch {
	case *path == "":
		fmt.Fprintf(stderr, "alertd store %s: -config FILE is required\n", action)
		return 2
	case len(pos) > 0 || (action == "check" && *from != ""):
		fmt.Fprint(stderr, storeUsage)
		return 2
	}
	cfg, err := app.Check(*path)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	if cfg.Store.Backend == config.BackendNATS {
		fmt.Fprintf(stderr, "alertd store %s: %s uses store.backend: nats: there is no store file; each partition's state is in JetStream, "+
			"its local copy rebuilt as the partition is taken\n", action, *path)
		return 2
	}
	if action == "check" {
		return storeCheck(cfg.Store.Path, stdout, stderr)
	}
	return storeSalvage(cfg.Store.Path, *from, stdout, stderr)
}

func storeCheck(path string, stdout, stderr io.Writer) int {
	err := store.Check(path)
	var damage *store.Damage
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "store %s: ok\n", path)
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(stdout, "store %s: none yet (alertd run creates it)\n", path)
	case errors.As(err, &damage):
		fmt.Fprintf(stderr, "store %s: damaged: %s (alertd run, or alertd store salvage, moves it aside and starts a fresh store with what can be read of it)\n", path, damage.Finding)
		return 1
	case errors.Is(err, store.ErrLocked):
		fmt.Fprintf(stderr, "store %s: in use by a running alertd, which checked it when it started; stop it to check again\n", path)
		return 1
	default:
		fmt.Fprintln(stderr, "alertd store check:", err)
		return 1
	}
	return 0
}

func storeSalvage(path, from string, stdout, stderr io.Writer) int {
	if _, err := os.Stat(path); err != nil && from == "" {
		fmt.Fprintf(stderr, "alertd store salvage: %v\n", err)
		return 1
	}
	db, rec, err := store.Open(path)
	if errors.Is(err, store.ErrLocked) {
		fmt.Fprintf(stderr, "alertd store salvage: %s is in use by a running alertd: stop it first\n", path)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "alertd store salvage:", err)
		return 1
	}
	defer db.Close()
	if rec != nil {
		fmt.Fprintf(stdout, "store %s was damaged: %s\n", path, rec.Finding)
		fmt.Fprintf(stdout, "moved it aside, untouched, to %s\n", rec.MovedTo)
		printSalvage(stdout, "copied into a fresh store", rec.Salvaged)
	} else if from == "" {
		fmt.Fprintf(stdout, "store %s: ok, nothing to salvage\n", path)
	}
	if from == "" {
		return 0
	}
	sv, err := store.SalvageFrom(db, from)
	if err != nil {
		fmt.Fprintln(stderr, "alertd store salvage:", err)
		return 1
	}
	printSalvage(stdout, "copied from "+from+" into "+path, sv)
	return 0
}

func printSalvage(w io.Writer, what string, sv store.Salvage) {
	fmt.Fprintf(w, "%s: %s\n", what, sv)
	if len(sv.Kept) > 0 {
		kept := ""
		for _, name := range slices.Sorted(maps.Keys(sv.Kept)) {
			kept += fmt.Sprintf(" %s=%d", name, sv.Kept[name])
		}
		fmt.Fprintf(w, "already in the store, kept as they were:%s\n", kept)
	}
	if sv.UnreadablePages+sv.UnreadableEntries > 0 {
		fmt.Fprintf(w, "could not be read: %d pages, %d entries\n", sv.UnreadablePages, sv.UnreadableEntries)
	}
	if sv.Note != "" {
		fmt.Fprintln(w, sv.Note)
	}
}
