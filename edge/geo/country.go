package geo

// Country returns the approximate centre (a representative point) of an
// ISO 3166-1 alpha-2 country code, case-insensitive; ok=false when unknown.
func Country(code string) (Point, bool) {
	c, ok := lookupCountry(code)
	return c.point, ok
}

// country is one row of the table: its upper-case code (returned as
// Location.Country, so callers share one string instead of allocating) and
// its representative point.
type country struct {
	code  string
	point Point
}

// lookupCountry finds code, case-insensitively, without allocating.
func lookupCountry(code string) (country, bool) {
	if len(code) != 2 {
		return country{}, false
	}
	var k [2]byte
	for i := 0; i < 2; i++ {
		b := code[i]
		if 'a' <= b && b <= 'z' {
			b -= 'a' - 'A'
		}
		if b < 'A' || b > 'Z' {
			return country{}, false
		}
		k[i] = b
	}
	c, ok := countries[k]
	return c, ok
}

var countries = func() map[[2]byte]country {
	m := make(map[[2]byte]country, len(countryTable))
	for _, c := range countryTable {
		m[[2]byte{c.code[0], c.code[1]}] = c
	}
	return m
}()

// countryTable holds one representative point per country: the place its
// traffic most likely comes from, which is usually the capital. Where the
// capital is a poor stand-in (a small administrative capital, or a country
// spread over a continent) the largest metropolitan area or the population
// centre is used instead, and the row says so. Points are rounded to about
// 1 km; they only need to pick the nearer of two PoPs.
var countryTable = []country{
	// European Union.
	{"AT", Point{48.2082, 16.3738}}, // Vienna
	{"BE", Point{50.8503, 4.3517}},  // Brussels
	{"BG", Point{42.6977, 23.3219}}, // Sofia
	{"HR", Point{45.8150, 15.9819}}, // Zagreb
	{"CY", Point{35.1856, 33.3823}}, // Nicosia
	{"CZ", Point{50.0755, 14.4378}}, // Prague
	{"DK", Point{55.6761, 12.5683}}, // Copenhagen
	{"EE", Point{59.4370, 24.7536}}, // Tallinn
	{"FI", Point{60.1699, 24.9384}}, // Helsinki
	{"FR", Point{48.8566, 2.3522}},  // Paris
	{"DE", Point{52.5200, 13.4050}}, // Berlin
	{"GR", Point{37.9838, 23.7275}}, // Athens
	{"HU", Point{47.4979, 19.0402}}, // Budapest
	{"IE", Point{53.3498, -6.2603}}, // Dublin
	{"IT", Point{41.9028, 12.4964}}, // Rome
	{"LV", Point{56.9496, 24.1052}}, // Riga
	{"LT", Point{54.6872, 25.2797}}, // Vilnius
	{"LU", Point{49.6116, 6.1319}},  // Luxembourg
	{"MT", Point{35.8989, 14.5146}}, // Valletta
	{"NL", Point{52.3676, 4.9041}},  // Amsterdam
	{"PL", Point{52.2297, 21.0122}}, // Warsaw
	{"PT", Point{38.7223, -9.1393}}, // Lisbon
	{"RO", Point{44.4268, 26.1025}}, // Bucharest
	{"SK", Point{48.1486, 17.1077}}, // Bratislava
	{"SI", Point{46.0569, 14.5058}}, // Ljubljana
	{"ES", Point{40.4168, -3.7038}}, // Madrid
	{"SE", Point{59.3293, 18.0686}}, // Stockholm
	// EEA / EFTA.
	{"IS", Point{64.1466, -21.9426}}, // Reykjavik
	{"LI", Point{47.1410, 9.5209}},   // Vaduz
	{"NO", Point{59.9139, 10.7522}},  // Oslo
	{"CH", Point{46.9480, 7.4474}},   // Bern
	// Rest of Europe and the Caucasus.
	{"GB", Point{51.5074, -0.1278}}, // London
	{"UA", Point{50.4501, 30.5234}}, // Kyiv
	{"RS", Point{44.7866, 20.4489}}, // Belgrade
	{"BA", Point{43.8563, 18.4131}}, // Sarajevo
	{"ME", Point{42.4304, 19.2594}}, // Podgorica
	{"MK", Point{41.9981, 21.4254}}, // Skopje
	{"AL", Point{41.3275, 19.8187}}, // Tirana
	{"MD", Point{47.0105, 28.8638}}, // Chisinau
	{"BY", Point{53.9006, 27.5590}}, // Minsk
	{"RU", Point{55.7558, 37.6173}}, // Moscow
	{"TR", Point{41.0082, 28.9784}}, // Istanbul, the largest metro (capital Ankara)
	{"GE", Point{41.7151, 44.8271}}, // Tbilisi
	{"AM", Point{40.1792, 44.4991}}, // Yerevan
	{"AZ", Point{40.4093, 49.8671}}, // Baku
	// North America and the Caribbean.
	{"US", Point{37.4, -92.4}},       // 2020 mean centre of population, Missouri
	{"CA", Point{43.6532, -79.3832}}, // Toronto, the largest metro (capital Ottawa)
	{"MX", Point{19.4326, -99.1332}}, // Mexico City
	{"GT", Point{14.6349, -90.5069}}, // Guatemala City
	{"HN", Point{14.0723, -87.1921}}, // Tegucigalpa
	{"SV", Point{13.6929, -89.2182}}, // San Salvador
	{"NI", Point{12.1150, -86.2362}}, // Managua
	{"CR", Point{9.9281, -84.0907}},  // San José
	{"PA", Point{8.9824, -79.5199}},  // Panama City
	{"CU", Point{23.1136, -82.3666}}, // Havana
	{"DO", Point{18.4861, -69.9312}}, // Santo Domingo
	{"PR", Point{18.4655, -66.1057}}, // San Juan
	{"JM", Point{17.9712, -76.7936}}, // Kingston
	{"TT", Point{10.6549, -61.5019}}, // Port of Spain
	// South America.
	{"BR", Point{-23.5505, -46.6333}}, // São Paulo, the largest metro (capital Brasília)
	{"AR", Point{-34.6037, -58.3816}}, // Buenos Aires
	{"CL", Point{-33.4489, -70.6693}}, // Santiago
	{"CO", Point{4.7110, -74.0721}},   // Bogotá
	{"PE", Point{-12.0464, -77.0428}}, // Lima
	{"VE", Point{10.4806, -66.9036}},  // Caracas
	{"EC", Point{-0.1807, -78.4678}},  // Quito
	{"BO", Point{-16.4897, -68.1193}}, // La Paz (seat of government)
	{"UY", Point{-34.9011, -56.1645}}, // Montevideo
	{"PY", Point{-25.2637, -57.5759}}, // Asunción
	// Asia.
	{"CN", Point{39.9042, 116.4074}}, // Beijing
	{"JP", Point{35.6762, 139.6503}}, // Tokyo
	{"KR", Point{37.5665, 126.9780}}, // Seoul
	{"TW", Point{25.0330, 121.5654}}, // Taipei
	{"HK", Point{22.3193, 114.1694}}, // Hong Kong
	{"MO", Point{22.1987, 113.5439}}, // Macao
	{"MN", Point{47.8864, 106.9057}}, // Ulaanbaatar
	{"IN", Point{28.6139, 77.2090}},  // New Delhi
	{"PK", Point{24.8607, 67.0011}},  // Karachi, the largest metro (capital Islamabad)
	{"BD", Point{23.8103, 90.4125}},  // Dhaka
	{"LK", Point{6.9271, 79.8612}},   // Colombo
	{"NP", Point{27.7172, 85.3240}},  // Kathmandu
	{"ID", Point{-6.2088, 106.8456}}, // Jakarta
	{"MY", Point{3.1390, 101.6869}},  // Kuala Lumpur
	{"SG", Point{1.3521, 103.8198}},  // Singapore
	{"TH", Point{13.7563, 100.5018}}, // Bangkok
	{"VN", Point{21.0278, 105.8342}}, // Hanoi
	{"PH", Point{14.5995, 120.9842}}, // Manila
	{"KH", Point{11.5564, 104.9282}}, // Phnom Penh
	{"MM", Point{16.8409, 96.1735}},  // Yangon, the largest metro (capital Naypyidaw)
	{"KZ", Point{43.2220, 76.8512}},  // Almaty, the largest metro (capital Astana)
	{"UZ", Point{41.2995, 69.2401}},  // Tashkent
	// Middle East.
	{"SA", Point{24.7136, 46.6753}}, // Riyadh
	{"AE", Point{25.2048, 55.2708}}, // Dubai, the largest metro (capital Abu Dhabi)
	{"QA", Point{25.2854, 51.5310}}, // Doha
	{"KW", Point{29.3759, 47.9774}}, // Kuwait City
	{"BH", Point{26.2285, 50.5860}}, // Manama
	{"OM", Point{23.5880, 58.3829}}, // Muscat
	{"IL", Point{32.0853, 34.7818}}, // Tel Aviv, the economic centre
	{"JO", Point{31.9454, 35.9284}}, // Amman
	{"LB", Point{33.8938, 35.5018}}, // Beirut
	{"IQ", Point{33.3152, 44.3661}}, // Baghdad
	{"IR", Point{35.6892, 51.3890}}, // Tehran
	// Africa.
	{"EG", Point{30.0444, 31.2357}},  // Cairo
	{"MA", Point{33.5731, -7.5898}},  // Casablanca, the largest metro (capital Rabat)
	{"DZ", Point{36.7538, 3.0588}},   // Algiers
	{"TN", Point{36.8065, 10.1815}},  // Tunis
	{"NG", Point{6.5244, 3.3792}},    // Lagos, the largest metro (capital Abuja)
	{"GH", Point{5.6037, -0.1870}},   // Accra
	{"SN", Point{14.7167, -17.4677}}, // Dakar
	{"CI", Point{5.3600, -4.0083}},   // Abidjan, the largest metro (capital Yamoussoukro)
	{"CM", Point{3.8480, 11.5021}},   // Yaoundé
	{"KE", Point{-1.2921, 36.8219}},  // Nairobi
	{"ET", Point{9.0054, 38.7636}},   // Addis Ababa
	{"UG", Point{0.3476, 32.5825}},   // Kampala
	{"TZ", Point{-6.7924, 39.2083}},  // Dar es Salaam, the largest metro (capital Dodoma)
	{"RW", Point{-1.9441, 30.0619}},  // Kigali
	{"CD", Point{-4.4419, 15.2663}},  // Kinshasa
	{"AO", Point{-8.8390, 13.2894}},  // Luanda
	{"ZM", Point{-15.3875, 28.3228}}, // Lusaka
	{"ZW", Point{-17.8252, 31.0335}}, // Harare
	{"MZ", Point{-25.9692, 32.5732}}, // Maputo
	{"MU", Point{-20.1609, 57.5012}}, // Port Louis
	{"ZA", Point{-26.2041, 28.0473}}, // Johannesburg, the largest metro (capital Pretoria)
	// Oceania.
	{"AU", Point{-33.8688, 151.2093}}, // Sydney, the largest metro (capital Canberra)
	{"NZ", Point{-36.8485, 174.7633}}, // Auckland, the largest metro (capital Wellington)
	{"FJ", Point{-18.1416, 178.4419}}, // Suva
}
