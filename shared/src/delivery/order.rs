//! The order a batch's records are processed in.

use super::InboundMessage;

/// The order a batch's records are processed in: those received for the first time as they
/// came, then those received before, shuffled. A panic aborts the process (release builds), so
/// the whole batch comes back, and on a quiet queue it comes back together. The records before
/// the one that panics are finished by then; in a fixed order, one that panics every time would
/// keep the same others from ever being reached, until the redrive moved them all to the
/// dead-letter queue. Shuffled, each comes before it on some receive.
pub(super) fn processing_order(messages: &[InboundMessage], rng: &mut fastrand::Rng) -> Vec<usize> {
    let (mut order, mut again): (Vec<usize>, Vec<usize>) =
        (0..messages.len()).partition(|&i| messages[i].receive_count <= 1);
    rng.shuffle(&mut again);
    order.append(&mut again);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(counts: &[u32]) -> Vec<InboundMessage> {
        counts
            .iter()
            .enumerate()
            .map(|(i, &receive_count)| InboundMessage {
                message_id: format!("m{i}"),
                receipt_handle: format!("r{i}"),
                body: String::new(),
                receive_count,
                replay: false,
            })
            .collect()
    }

    #[test]
    fn first_receives_come_first_as_they_came() {
        let batch = received(&[1, 3, 1, 2, 1]);
        for seed in 0..20 {
            let order = processing_order(&batch, &mut fastrand::Rng::with_seed(seed));
            assert_eq!(order[..3], [0, 2, 4], "seed {seed}");
            let mut rest = order[3..].to_vec();
            rest.sort_unstable();
            assert_eq!(rest, [1, 3], "seed {seed}");
        }
    }

    #[test]
    fn each_message_received_before_leads_on_some_receive() {
        // A batch that failed together comes back together: whichever of them panics, each
        // of the others is processed before it on some receive.
        let batch = received(&[4; 10]);
        let mut led = [false; 10];
        for seed in 0..200 {
            let order = processing_order(&batch, &mut fastrand::Rng::with_seed(seed));
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "a permutation");
            led[order[0]] = true;
        }
        assert_eq!(led, [true; 10]);
    }
}
