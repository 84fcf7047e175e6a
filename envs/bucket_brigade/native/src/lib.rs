//! Bucket Brigade: a cooperative firefighting game on a ring of houses, batched over many games.
//!
//! Each night every agent picks `[house, mode (0 REST, 1 WORK), signal]`. The night runs in this order
//! (the canonical rules): signals and locations are recorded; burning houses are fought (Bernoulli: one draw per
//! burning house, put out with probability 1 - (1 - kappa)^workers; continuous: workers add suppression until it
//! reaches 1); burning houses burn out (become RUINED); burning houses spread to SAFE neighbours (inert after
//! burn-out unless `spread_before_burnout`, or in continuous mode where fires persist); SAFE houses ignite
//! spontaneously with probability rho; per-agent rewards; termination; the night counter advances.
//!
//! A game terminates when night >= min_nights and no house burns, and is truncated after `max_nights` nights.
//! Finished games reset on the next step (Gymnasium 1.x's next-step auto-reset): that step ignores their actions,
//! returns the new game's first observation with zero rewards and false flags.
//!
//! The C ABI (`bb_*`) reads actions from and writes observations, rewards and flags into caller-owned buffers.
//! Every entry point validates its input and returns a status code; none panics across the boundary.

use std::panic::{catch_unwind, AssertUnwindSafe};

pub const SAFE: u8 = 0;
pub const BURNING: u8 = 1;
pub const RUINED: u8 = 2;

/// Scenario features in observations, in this order.
pub const NUM_SCENARIO_FEATURES: usize = 12;

pub const STATUS_OK: i32 = 0;
pub const STATUS_BAD_ARGUMENT: i32 = 1;
pub const STATUS_BAD_HOUSE: i32 = 2;
pub const STATUS_BAD_MODE: i32 = 3;
pub const STATUS_BAD_SIGNAL: i32 = 4;
pub const STATUS_PANIC: i32 = 99;

/// Game parameters (one scenario). Field meanings follow the scenario table of the original game.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub num_houses: u32,
    /// beta: probability a burning house ignites a SAFE neighbour (per neighbour, per night).
    pub prob_fire_spreads: f32,
    /// kappa: probability one worker puts a fire out.
    pub prob_solo_agent_extinguishes_fire: f32,
    /// rho: probability a SAFE house catches fire (at reset and every night).
    pub prob_house_catches_fire: f32,
    /// A: team reward per night, times the fraction of SAFE houses.
    pub team_reward_house_survives: f32,
    /// L: team penalty per night, times the fraction of RUINED houses.
    pub team_penalty_house_burns: f32,
    /// c: cost of a night of WORK.
    pub cost_to_work_one_night: f32,
    /// reward of a night of REST.
    pub reward_rest: f32,
    pub min_nights: u32,
    pub reward_own_house_survives: f32,
    pub reward_other_house_survives: f32,
    pub penalty_own_house_burns: f32,
    pub penalty_other_house_burns: f32,
    /// alpha: extra WORK cost per unit of ring distance between the agent's home and the house worked.
    pub distance_cost_alpha: f32,
    /// 0: Bernoulli extinguishing and burn-out; 1: continuous suppression (fires persist until put out).
    pub continuous: u32,
    pub suppression_per_worker: f32,
    /// 1: fires spread before burning out (the contagion variant); 0: the canonical order.
    pub spread_before_burnout: u32,
}

/// splitmix64: seeds the per-game generators from (seed, game index).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro128++: small, fast, good statistical quality; one per game so games are independent of batching.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u32; 4],
}

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut state = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let a = splitmix64(&mut state);
        let b = splitmix64(&mut state);
        let mut s = [a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32];
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    pub fn next_u32(&mut self) -> u32 {
        let result = self.s[0].wrapping_add(self.s[3]).rotate_left(7).wrapping_add(self.s[0]);
        let t = self.s[1] << 9;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(11);
        result
    }

    /// Uniform in [0, 1) with 24 bits: `u < 1.0` always holds and `u < 0.0` never does.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
    }
}

/// One game's state.
#[derive(Clone, Debug)]
struct Game {
    houses: Vec<u8>,
    suppression: Vec<f32>,
    signals: Vec<u8>,
    locations: Vec<u8>,
    last_actions: Vec<u8>, // (agent, [house, mode, signal])
    night: u32,
    needs_reset: bool,
    rng: Rng,
}

/// A batch of games sharing one scenario and number of agents.
pub struct VecGame {
    scenario: Scenario,
    num_agents: usize,
    max_nights: u32,
    homes: Vec<u32>,
    features: [f32; NUM_SCENARIO_FEATURES],
    games: Vec<Game>,
    // scratch buffers reused every night
    start_houses: Vec<u8>,
    snapshot: Vec<u8>,
    workers: Vec<u32>,
}

fn ring_distance(a: u32, b: u32, houses: u32) -> u32 {
    let d = if a > b { a - b } else { b - a };
    d.min(houses - d)
}

impl VecGame {
    pub fn new(scenario: Scenario, num_envs: usize, num_agents: usize, homes: &[u32], seed: u64, max_nights: u32)
        -> Result<VecGame, i32> {
        let h = scenario.num_houses as usize;
        if h < 2 || h > 255 || num_envs < 1 || num_agents < 1 || num_agents > 255 || max_nights < 1
            || homes.len() != num_agents || homes.iter().any(|&home| home as usize >= h) {
            return Err(STATUS_BAD_ARGUMENT);
        }
        let s = &scenario;
        let n = num_agents as f32;
        let features = [
            s.prob_fire_spreads, s.prob_solo_agent_extinguishes_fire, s.team_reward_house_survives,
            s.team_penalty_house_burns, s.cost_to_work_one_night, s.prob_house_catches_fire, s.min_nights as f32, n,
            s.reward_own_house_survives, s.reward_other_house_survives, s.penalty_own_house_burns,
            s.penalty_other_house_burns,
        ];
        let games = (0..num_envs)
            .map(|index| Game {
                houses: vec![SAFE; h],
                suppression: vec![0.0; h],
                signals: vec![0; num_agents],
                locations: vec![0; num_agents],
                last_actions: vec![0; 3 * num_agents],
                night: 0,
                needs_reset: true,
                rng: Rng::new(seed, index as u64),
            })
            .collect();
        Ok(VecGame {
            scenario,
            num_agents,
            max_nights,
            homes: homes.to_vec(),
            features,
            games,
            start_houses: vec![SAFE; h],
            snapshot: vec![SAFE; h],
            workers: vec![0; h],
        })
    }

    pub fn num_envs(&self) -> usize {
        self.games.len()
    }

    /// houses + signals + locations + last actions (3 per agent) + scenario features + identity one-hot + night.
    pub fn obs_dim(&self) -> usize {
        self.scenario.num_houses as usize + 6 * self.num_agents + NUM_SCENARIO_FEATURES + 1
    }

    /// Restarts every game's random stream from `seed` (as if built with it).
    pub fn reseed(&mut self, seed: u64) {
        for (index, game) in self.games.iter_mut().enumerate() {
            game.rng = Rng::new(seed, index as u64);
        }
    }

    pub fn reset(&mut self, obs: &mut [f32]) {
        for index in 0..self.games.len() {
            self.reset_game(index);
            self.write_obs(index, obs);
        }
    }

    fn reset_game(&mut self, index: usize) {
        let rho = self.scenario.prob_house_catches_fire;
        let game = &mut self.games[index];
        for house in game.houses.iter_mut() {
            *house = if game.rng.uniform() < rho { BURNING } else { SAFE };
        }
        game.suppression.iter_mut().for_each(|v| *v = 0.0);
        game.signals.iter_mut().for_each(|v| *v = 0);
        game.locations.iter_mut().for_each(|v| *v = 0);
        game.last_actions.iter_mut().for_each(|v| *v = 0);
        game.night = 0;
        game.needs_reset = false;
    }

    /// Checks every action of the games that will play this step; no state changes on error.
    /// Returns (status, flat index of the offending value).
    pub fn validate(&self, actions: &[i64]) -> (i32, usize) {
        let h = self.scenario.num_houses as i64;
        for (index, game) in self.games.iter().enumerate() {
            if game.needs_reset {
                continue;
            }
            for agent in 0..self.num_agents {
                let at = 3 * (index * self.num_agents + agent);
                if actions[at] < 0 || actions[at] >= h {
                    return (STATUS_BAD_HOUSE, at);
                }
                if actions[at + 1] != 0 && actions[at + 1] != 1 {
                    return (STATUS_BAD_MODE, at + 1);
                }
                if actions[at + 2] != 0 && actions[at + 2] != 1 {
                    return (STATUS_BAD_SIGNAL, at + 2);
                }
            }
        }
        (STATUS_OK, 0)
    }

    /// One night of every game (actions already validated).
    pub fn step(&mut self, actions: &[i64], obs: &mut [f32], rewards: &mut [f32], terminated: &mut [u8],
                truncated: &mut [u8]) {
        let n = self.num_agents;
        for index in 0..self.games.len() {
            let reward_row = &mut rewards[index * n..(index + 1) * n];
            if self.games[index].needs_reset {
                self.reset_game(index);
                reward_row.iter_mut().for_each(|r| *r = 0.0);
                terminated[index] = 0;
                truncated[index] = 0;
            } else {
                let (done, cut) = self.play_night(index, &actions[3 * n * index..3 * n * (index + 1)], reward_row);
                terminated[index] = done as u8;
                truncated[index] = cut as u8;
                self.games[index].needs_reset = done || cut;
            }
            self.write_obs(index, obs);
        }
    }

    fn play_night(&mut self, index: usize, actions: &[i64], rewards: &mut [f32]) -> (bool, bool) {
        let s = self.scenario;
        let h = s.num_houses as usize;
        let n = self.num_agents;
        let game = &mut self.games[index];
        self.start_houses.copy_from_slice(&game.houses);
        self.workers.iter_mut().for_each(|w| *w = 0);
        for agent in 0..n {
            let (house, mode, signal) = (actions[3 * agent] as u8, actions[3 * agent + 1] as u8, actions[3 * agent + 2] as u8);
            game.signals[agent] = signal;
            game.locations[agent] = house;
            game.last_actions[3 * agent..3 * agent + 3].copy_from_slice(&[house, mode, signal]);
            if mode == 1 {
                self.workers[house as usize] += 1;
            }
        }
        // Extinguish.
        for house in 0..h {
            if game.houses[house] != BURNING {
                continue;
            }
            let workers = self.workers[house];
            if s.continuous != 0 {
                game.suppression[house] += workers as f32 * s.suppression_per_worker;
                if game.suppression[house] >= 1.0 {
                    game.houses[house] = SAFE;
                    game.suppression[house] = 0.0;
                }
            } else {
                let p = 1.0 - (1.0 - s.prob_solo_agent_extinguishes_fire).powi(workers as i32);
                if game.rng.uniform() < p {
                    game.houses[house] = SAFE;
                }
            }
        }
        // Burn-out and spread (continuous fires never burn out; they persist and spread).
        if s.continuous != 0 {
            spread(&mut game.houses, &mut self.snapshot, &mut game.rng, s.prob_fire_spreads);
        } else if s.spread_before_burnout != 0 {
            spread(&mut game.houses, &mut self.snapshot, &mut game.rng, s.prob_fire_spreads);
            burn_out(&mut game.houses);
        } else {
            burn_out(&mut game.houses);
            spread(&mut game.houses, &mut self.snapshot, &mut game.rng, s.prob_fire_spreads);
        }
        // Spontaneous ignition.
        for house in game.houses.iter_mut() {
            if *house == SAFE && game.rng.uniform() < s.prob_house_catches_fire {
                *house = BURNING;
            }
        }
        // Rewards.
        let safe = game.houses.iter().filter(|&&v| v == SAFE).count() as f32;
        let ruined = game.houses.iter().filter(|&&v| v == RUINED).count() as f32;
        let team = s.team_reward_house_survives * safe / h as f32 - s.team_penalty_house_burns * ruined / h as f32;
        for agent in 0..n {
            let (house, mode) = (game.last_actions[3 * agent] as u32, game.last_actions[3 * agent + 1]);
            let mut reward = team;
            reward += if mode == 1 {
                -s.cost_to_work_one_night - s.distance_cost_alpha * ring_distance(self.homes[agent], house, s.num_houses) as f32
            } else {
                s.reward_rest
            };
            for h_index in 0..h {
                let own = h_index % n == agent;
                if self.start_houses[h_index] != SAFE && game.houses[h_index] == SAFE {
                    reward += if own { s.reward_own_house_survives } else { s.reward_other_house_survives };
                }
                if game.houses[h_index] == RUINED {
                    reward -= if own { s.penalty_own_house_burns } else { s.penalty_other_house_burns };
                }
            }
            rewards[agent] = reward;
        }
        // Termination on the night just played, then the counter advances.
        let burning = game.houses.iter().any(|&v| v == BURNING);
        let done = game.night >= s.min_nights && !burning;
        game.night += 1;
        (done, !done && game.night >= self.max_nights)
    }

    fn write_obs(&self, index: usize, obs: &mut [f32]) {
        let dim = self.obs_dim();
        let n = self.num_agents;
        let game = &self.games[index];
        for agent in 0..n {
            let row = &mut obs[(index * n + agent) * dim..(index * n + agent + 1) * dim];
            let mut at = 0;
            for &v in game.houses.iter().chain(&game.signals).chain(&game.locations).chain(&game.last_actions) {
                row[at] = v as f32;
                at += 1;
            }
            row[at..at + NUM_SCENARIO_FEATURES].copy_from_slice(&self.features);
            at += NUM_SCENARIO_FEATURES;
            row[at..at + n].iter_mut().for_each(|v| *v = 0.0);
            row[at + agent] = 1.0;
            row[at + n] = game.night as f32;
        }
    }
}

fn burn_out(houses: &mut [u8]) {
    for house in houses.iter_mut() {
        if *house == BURNING {
            *house = RUINED;
        }
    }
}

/// Each house burning at the start of the phase tries each SAFE neighbour once (no cascade within the phase).
fn spread(houses: &mut [u8], snapshot: &mut [u8], rng: &mut Rng, beta: f32) {
    let h = houses.len();
    snapshot.copy_from_slice(houses);
    for house in 0..h {
        if snapshot[house] != BURNING {
            continue;
        }
        for neighbour in [(house + h - 1) % h, (house + 1) % h] {
            if snapshot[neighbour] == SAFE && rng.uniform() < beta {
                houses[neighbour] = BURNING;
            }
        }
    }
}

// ---- C ABI ------------------------------------------------------------------------------------------------------

fn guarded<F: FnOnce() -> i32>(body: F) -> i32 {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(STATUS_PANIC)
}

/// Creates a batch of games; null on invalid arguments. `homes` holds one home house per agent.
///
/// # Safety
/// `scenario` must point to a `Scenario` and `homes` to `num_agents` u32 values.
#[no_mangle]
pub unsafe extern "C" fn bb_new(scenario: *const Scenario, num_envs: u32, num_agents: u32, homes: *const u32,
                                seed: u64, max_nights: u32) -> *mut VecGame {
    if scenario.is_null() || homes.is_null() {
        return std::ptr::null_mut();
    }
    let result = catch_unwind(|| {
        let homes = std::slice::from_raw_parts(homes, num_agents as usize);
        VecGame::new(*scenario, num_envs as usize, num_agents as usize, homes, seed, max_nights)
    });
    match result {
        Ok(Ok(game)) => Box::into_raw(Box::new(game)),
        _ => std::ptr::null_mut(),
    }
}

/// # Safety
/// `game` must come from `bb_new` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn bb_free(game: *mut VecGame) {
    if !game.is_null() {
        drop(Box::from_raw(game));
    }
}

/// # Safety
/// `game` must come from `bb_new`.
#[no_mangle]
pub unsafe extern "C" fn bb_obs_dim(game: *const VecGame) -> u32 {
    if game.is_null() { 0 } else { (*game).obs_dim() as u32 }
}

/// Resets every game (reseeding first when `reseed` is non-zero) and writes `num_envs * num_agents * obs_dim` floats.
///
/// # Safety
/// `game` must come from `bb_new`; `obs` must hold `num_envs * num_agents * obs_dim` floats.
#[no_mangle]
pub unsafe extern "C" fn bb_reset(game: *mut VecGame, reseed: u8, seed: u64, obs: *mut f32) -> i32 {
    if game.is_null() || obs.is_null() {
        return STATUS_BAD_ARGUMENT;
    }
    guarded(|| {
        let game = &mut *game;
        let len = game.num_envs() * game.num_agents * game.obs_dim();
        if reseed != 0 {
            game.reseed(seed);
        }
        game.reset(std::slice::from_raw_parts_mut(obs, len));
        STATUS_OK
    })
}

/// Steps every game. `actions`: `num_envs * num_agents * 3` int64 (house, mode, signal). On a bad action nothing
/// changes, the status says which field is wrong and `bad_index` the flat index of the value.
///
/// # Safety
/// `game` must come from `bb_new`; the buffers must have the sizes above (`rewards`: num_envs * num_agents,
/// `terminated`, `truncated`: num_envs), and `bad_index` must point to one usize.
#[no_mangle]
pub unsafe extern "C" fn bb_step(game: *mut VecGame, actions: *const i64, obs: *mut f32, rewards: *mut f32,
                                 terminated: *mut u8, truncated: *mut u8, bad_index: *mut usize) -> i32 {
    if game.is_null() || actions.is_null() || obs.is_null() || rewards.is_null() || terminated.is_null()
        || truncated.is_null() || bad_index.is_null() {
        return STATUS_BAD_ARGUMENT;
    }
    guarded(|| {
        let game = &mut *game;
        let (envs, agents) = (game.num_envs(), game.num_agents);
        let actions = std::slice::from_raw_parts(actions, envs * agents * 3);
        let (status, at) = game.validate(actions);
        if status != STATUS_OK {
            *bad_index = at;
            return status;
        }
        game.step(
            actions,
            std::slice::from_raw_parts_mut(obs, envs * agents * game.obs_dim()),
            std::slice::from_raw_parts_mut(rewards, envs * agents),
            std::slice::from_raw_parts_mut(terminated, envs),
            std::slice::from_raw_parts_mut(truncated, envs),
        );
        STATUS_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        // the `default` scenario
        Scenario {
            num_houses: 10, prob_fire_spreads: 0.25, prob_solo_agent_extinguishes_fire: 0.5,
            prob_house_catches_fire: 0.02, team_reward_house_survives: 100.0, team_penalty_house_burns: 100.0,
            cost_to_work_one_night: 0.5, reward_rest: 0.5, min_nights: 12, reward_own_house_survives: 20.0,
            reward_other_house_survives: 0.0, penalty_own_house_burns: 40.0, penalty_other_house_burns: 0.0,
            distance_cost_alpha: 0.0, continuous: 0, suppression_per_worker: 0.0, spread_before_burnout: 0,
        }
    }

    fn run(scenario: Scenario, seed: u64, nights: usize, actions: &[i64]) -> (Vec<f32>, Vec<f32>) {
        let mut game = VecGame::new(scenario, 3, 4, &[0, 1, 2, 3], seed, 100).unwrap();
        let mut obs = vec![0.0; 3 * 4 * game.obs_dim()];
        let mut rewards = vec![0.0; 12];
        let (mut term, mut trunc) = (vec![0; 3], vec![0; 3]);
        let mut all_rewards = vec![];
        game.reset(&mut obs);
        for _ in 0..nights {
            assert_eq!(game.validate(actions).0, STATUS_OK);
            game.step(actions, &mut obs, &mut rewards, &mut term, &mut trunc);
            all_rewards.extend_from_slice(&rewards);
        }
        (obs, all_rewards)
    }

    #[test]
    fn same_seed_same_games_other_seed_other_games() {
        let actions: Vec<i64> = (0..36).map(|i| if i % 3 == 0 { (i / 3 % 10) as i64 } else { 1 }).collect();
        assert_eq!(run(scenario(), 7, 30, &actions), run(scenario(), 7, 30, &actions));
        assert_ne!(run(scenario(), 7, 30, &actions).1, run(scenario(), 8, 30, &actions).1);
    }

    #[test]
    fn uniform_is_in_unit_interval_and_streams_differ() {
        let mut a = Rng::new(12345, 0);
        let mut b = Rng::new(54321, 0);
        let xs: Vec<f32> = (0..10_000).map(|_| a.uniform()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert_ne!(a.next_u32(), b.next_u32());
    }

    #[test]
    fn one_worker_puts_out_a_fire_with_probability_kappa() {
        let mut s = scenario();
        s.prob_house_catches_fire = 1.0; // every house burns at reset
        let mut game = VecGame::new(s, 4000, 1, &[0], 3, 100).unwrap();
        let mut obs = vec![0.0; 4000 * game.obs_dim()];
        game.reset(&mut obs);
        game.scenario.prob_house_catches_fire = 0.0; // no new fires: house 0 ends SAFE (put out) or RUINED
        let actions: Vec<i64> = (0..4000).flat_map(|_| [0, 1, 0]).collect();
        let (mut rewards, mut term, mut trunc) = (vec![0.0; 4000], vec![0; 4000], vec![0; 4000]);
        game.step(&actions, &mut obs, &mut rewards, &mut term, &mut trunc);
        let saved = (0..4000).filter(|env| obs[env * game.obs_dim()] == SAFE as f32).count();
        let rate = saved as f32 / 4000.0;
        assert!((rate - 0.5).abs() < 0.03, "rate {rate}");
    }

    #[test]
    fn continuous_suppression_takes_two_nights_for_one_worker_at_half() {
        let mut s = scenario();
        s.continuous = 1;
        s.suppression_per_worker = 0.5;
        s.prob_house_catches_fire = 1.0;
        let mut game = VecGame::new(s, 1, 1, &[0], 0, 100).unwrap();
        let mut obs = vec![0.0; game.obs_dim()];
        game.reset(&mut obs);
        game.scenario.prob_house_catches_fire = 0.0; // no new fires after the reset ...
        game.scenario.prob_fire_spreads = 0.0; // ... and none from the burning neighbours
        let (mut r, mut te, mut tr) = (vec![0.0], vec![0], vec![0]);
        game.step(&[0, 1, 0], &mut obs, &mut r, &mut te, &mut tr);
        assert_eq!(obs[0], BURNING as f32);
        game.step(&[0, 1, 0], &mut obs, &mut r, &mut te, &mut tr);
        assert_eq!(obs[0], SAFE as f32);
    }

    #[test]
    fn bad_actions_are_reported_and_change_nothing() {
        let mut game = VecGame::new(scenario(), 2, 2, &[0, 1], 0, 100).unwrap();
        let mut obs = vec![0.0; 4 * game.obs_dim()];
        game.reset(&mut obs);
        let mut actions = vec![0i64; 12];
        actions[9] = 10;
        assert_eq!(game.validate(&actions), (STATUS_BAD_HOUSE, 9));
        actions[9] = 0;
        actions[4] = 2;
        assert_eq!(game.validate(&actions), (STATUS_BAD_MODE, 4));
        actions[4] = 0;
        actions[11] = -1;
        assert_eq!(game.validate(&actions), (STATUS_BAD_SIGNAL, 11));
        assert!(VecGame::new(scenario(), 0, 2, &[0, 1], 0, 100).is_err());
        assert!(VecGame::new(scenario(), 1, 0, &[], 0, 100).is_err());
    }

    #[test]
    fn games_terminate_or_truncate_and_reset_next_step() {
        let mut game = VecGame::new(scenario(), 64, 4, &[0, 1, 2, 3], 5, 30).unwrap();
        let mut obs = vec![0.0; 64 * 4 * game.obs_dim()];
        let (mut r, mut te, mut tr) = (vec![0.0; 256], vec![0; 64], vec![0; 64]);
        game.reset(&mut obs);
        let rest = vec![0i64; 64 * 12];
        let mut ended = vec![false; 64];
        for night in 0..31 {
            game.step(&rest, &mut obs, &mut r, &mut te, &mut tr);
            for env in 0..64 {
                if ended[env] {
                    assert_eq!((te[env], tr[env]), (0, 0));
                    assert!(r[env * 4..env * 4 + 4].iter().all(|&x| x == 0.0));
                    assert_eq!(obs[(env * 4 + 1) * game.obs_dim() - 1], 0.0); // night 0 of the new game
                    ended[env] = false;
                } else if te[env] == 1 || tr[env] == 1 {
                    assert!(te[env] == 0 || night >= 12);
                    assert!(tr[env] == 0 || night == 29);
                    ended[env] = true;
                }
            }
        }
    }
}
