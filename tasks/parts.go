package tasks

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// maxPartNumber is the largest part number S3 accepts.
const maxPartNumber = 10000

// FormatParts writes part numbers as a compact list of ranges, ascending:
// 1,2,3,5,7,8 is "1-3,5,7-8". Parts finish nearly in order, so a resumed
// upload's thousands of parts are a few characters. Duplicates are
// dropped; nil or empty is "".
func FormatParts(parts []int) string {
	ps := slices.Clone(parts)
	slices.Sort(ps)
	ps = slices.Compact(ps)
	var b strings.Builder
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(ps[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(ps[j]))
		}
		i = j + 1
	}
	return b.String()
}

// ParseParts reads a list FormatParts wrote: the part numbers, ascending.
// Numbers must be 1..10,000 and ranges ascending; "" is none.
func ParseParts(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, r := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 1 || b < a || b > maxPartNumber {
			return nil, fmt.Errorf("part list %q: %q is not a part number or an ascending range of them (1-%d)", s, r, maxPartNumber)
		}
		for n := a; n <= b; n++ {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
