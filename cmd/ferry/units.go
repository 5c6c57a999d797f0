package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// sizeUnits maps a unit, lower-cased, to its multiplier: IEC units (KiB) and
// single letters (K, as rclone reads them) are powers of 1024, SI units (KB)
// powers of 1000.
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "ki": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mi": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gi": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "ti": 1 << 40, "tb": 1e12,
}

// parseSize parses "1048576", "16MiB", "16M", "5GB", "1.5 GiB".
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	mult, ok := sizeUnits[unit]
	v, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || num == "" || v < 0 {
		return 0, usageErrorf("invalid size %q: use bytes (1048576) or a number with a unit: KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000), e.g. 16MiB", s)
	}
	b := v * mult
	if b > math.MaxInt64/2 || b != math.Trunc(b) {
		return 0, usageErrorf("invalid size %q: it must be a whole number of bytes below 4 EiB", s)
	}
	return int64(b), nil
}

// parseDuration is time.ParseDuration with an actionable message.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 {
		return 0, usageErrorf("invalid duration %q: use a number with a unit, e.g. 90s, 15m, 1h30m", s)
	}
	return d, nil
}

// formatBytes prints n in IEC units: "1.5 MiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// eta is the time left at rate bytes per second; 0 when unknown.
func eta(done, total int64, rate float64) time.Duration {
	if total <= 0 || rate <= 0 || done >= total {
		return 0
	}
	return time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second)
}

// sizeFlag is a pflag.Value holding a size.
type sizeFlag struct{ v *int64 }

func (f sizeFlag) String() string {
	if f.v == nil || *f.v == 0 {
		return ""
	}
	return strconv.FormatInt(*f.v, 10)
}

func (f sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*f.v = n
	return nil
}

func (f sizeFlag) Type() string { return "size" }

// durationFlag is a pflag.Value holding a duration, with parseDuration's
// message.
type durationFlag struct{ v *time.Duration }

func (f durationFlag) String() string {
	if f.v == nil || *f.v == 0 {
		return ""
	}
	return f.v.String()
}

func (f durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*f.v = d
	return nil
}

func (f durationFlag) Type() string { return "duration" }
