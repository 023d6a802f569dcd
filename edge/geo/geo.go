// Package geo answers two questions for the router: where is this client,
// and how far apart are two places.
//
// A Locator believes, in order, a location header set by a trusted proxy, a
// GeoIP lookup of the client's address, and finally the edge's own region.
// It must never trust a location header or an X-Forwarded-For entry from a
// peer outside Config.TrustedProxies, never do I/O or allocate on the hot
// path beyond the GeoIP lookup itself, and never panic on bad input: a
// value it cannot parse is ignored, not guessed at.
package geo

import "math"

// EarthRadiusKm is the mean Earth radius (IUGG), in kilometres, used by
// DistanceKm.
const EarthRadiusKm = 6371.0088

// Point is a place on Earth, degrees.
type Point struct{ Lat, Lon float64 }

// Valid reports lat in [-90,90], lon in [-180,180], not NaN.
func (p Point) Valid() bool {
	// The comparisons are false for NaN, so NaN is rejected too.
	return p.Lat >= -90 && p.Lat <= 90 && p.Lon >= -180 && p.Lon <= 180
}

// DistanceKm is the great-circle (haversine) distance, km, Earth radius
// 6371.0088 km.
func DistanceKm(a, b Point) float64 {
	const rad = math.Pi / 180
	lat1, lat2 := a.Lat*rad, b.Lat*rad
	dLat := (b.Lat - a.Lat) * rad
	dLon := (b.Lon - a.Lon) * rad
	sLat, sLon := math.Sin(dLat/2), math.Sin(dLon/2)
	h := sLat*sLat + math.Cos(lat1)*math.Cos(lat2)*sLon*sLon
	// Rounding can push h a hair past 1 for antipodes; asin would give NaN.
	h = min(max(h, 0), 1)
	return 2 * EarthRadiusKm * math.Asin(math.Sqrt(h))
}
