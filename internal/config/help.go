package config

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// Help texts and the operator guide's flag table are both printed from the
// flag definitions, so that neither can drift from what dkimd reads
// (docs/operator-guide.md, "Configure"; a test compares the two).

// DefaultText is a flag's default as help shows it: the computed default for
// flags whose default depends on another flag, durations without trailing
// zero units ("96h", not "96h0m0s"), empty when there is none.
func DefaultText(f *flag.Flag) string {
	if d, ok := dynamicDefaults[f.Name]; ok {
		if d.value == "" || d.note == "" {
			return d.value + d.note
		}
		return d.value + ", " + d.note
	}
	if g, ok := f.Value.(flag.Getter); ok {
		if _, isDur := g.Get().(time.Duration); isDur {
			if d, err := time.ParseDuration(f.DefValue); err == nil {
				return shortDuration(d)
			}
		}
	}
	return f.DefValue
}

func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Meaning is a flag's usage without the environment note that every usage
// ends with.
func Meaning(f *flag.Flag) string {
	return strings.TrimSuffix(f.Usage, " (env "+envName(f.Name)+")")
}

// PrintFlags writes every flag of fs, sorted by name, with its meaning,
// default and environment twin.
func PrintFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, _ := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintln(w, line)
		fmt.Fprintln(w, "      "+Meaning(f))
		var tail []string
		if d := DefaultText(f); d != "" && !isBool(f) {
			tail = append(tail, "default "+d)
		}
		if Meaning(f) != f.Usage {
			tail = append(tail, "env "+envName(f.Name))
		}
		if len(tail) > 0 {
			fmt.Fprintln(w, "      ("+strings.Join(tail, "; ")+")")
		}
	})
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// MarkdownTable is the operator guide's flag table for the flags of fs.
func MarkdownTable(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString("| flag | environment | default | meaning |\n|---|---|---|---|\n")
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	fs.VisitAll(func(f *flag.Flag) {
		var def string
		if d, dynamic := dynamicDefaults[f.Name]; dynamic {
			if d.value != "" {
				def = "`" + cell(d.value) + "`"
			}
			if d.note != "" && def != "" {
				def += ", " + d.note
			} else if d.note != "" {
				def = d.note
			}
		} else if d := DefaultText(f); d != "" {
			def = "`" + cell(d) + "`"
		}
		fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s |\n", f.Name, envName(f.Name), def, cell(Meaning(f)))
	})
	return b.String()
}
