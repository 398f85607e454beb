// The app's texts in French, German and English, and the words for every refusal the APIs
// give (by the problem's type), with the country's rules filled in.

import {settings, useLanguage} from './lib.js';
import {ApiError} from './api.js';

const en = {
  'loading': 'Loading…',
  'skip': 'Skip to content',
  'nav.find': 'Find a practitioner', 'nav.appointments': 'My appointments', 'nav.sale': 'Flash sales',
  'nav.wallet': 'Wallet', 'nav.notifications': 'Notifications', 'nav.signIn': 'Sign in', 'nav.signOut': 'Sign out',
  'nav.language': 'Language', 'nav.unread': {one: '{count} unread notification', other: '{count} unread notifications'},
  'search.title': 'Find a practitioner', 'search.specialty': 'Specialty', 'search.anySpecialty': 'Any specialty',
  'search.city': 'City', 'search.cityExample': 'Paris', 'search.submit': 'Search', 'search.nearMe': 'Near me',
  'search.results': 'Results', 'search.start': 'Choose a specialty, a city, or search near you.',
  'search.found': {one: '{count} practitioner', other: '{count} practitioners'},
  'search.none': 'No practitioner matches. Try another city or specialty.',
  'search.distance': '{km} km away', 'search.price': 'Consultation: {price}', 'search.next': 'Next free slot: {when}',
  'search.noSlot': 'No free slot soon.', 'search.seeSlots': 'See free slots', 'search.seeSlotsOf': 'See the free slots of {name}',
  'search.pages': 'Pages of results', 'search.previousPage': 'Previous page', 'search.nextPage': 'Next page',
  'search.noLocation': 'Your position is not available: search by city instead.', 'search.locating': 'Finding your position…',
  'specialty.general-practice': 'General practice', 'specialty.dentistry': 'Dentistry', 'specialty.dermatology': 'Dermatology',
  'specialty.pediatrics': 'Pediatrics', 'specialty.ophthalmology': 'Ophthalmology', 'specialty.gynecology': 'Gynecology',
  'specialty.cardiology': 'Cardiology', 'specialty.physiotherapy': 'Physiotherapy', 'specialty.psychiatry': 'Psychiatry',
  'practitioner.title': 'Practitioner', 'practitioner.noSlot': 'No free slot', 'practitioner.slotLabel': 'Book {when}',
  'practitioner.speaks': 'Speaks {languages}', 'practitioner.moving': 'Choose the new time of your appointment.',
  'practitioner.week': 'Week from {day}', 'practitioner.previous': 'Previous week', 'practitioner.next': 'Next week',
  'confirm.title': 'Confirm your appointment', 'confirm.moveTitle': 'Confirm the new time',
  'confirm.signInFirst': 'Sign in with your phone to book.', 'confirm.booking': 'Booking…',
  'confirm.done': 'Your appointment is booked', 'confirm.doneText': '{when} with {name}.',
  'confirm.book': 'Book this appointment', 'confirm.move': 'Move my appointment here',
  'confirm.text': '{when} with {name} ({price}).', 'confirm.other': 'Choose another time',
  'signin.title': 'Sign in', 'signin.phone': 'Mobile phone', 'signin.phoneHint': 'We text you a 6-digit code.',
  'signin.send': 'Send me a code', 'signin.sent': 'A code is on its way.', 'signin.sandbox': 'Sandbox code: {code}',
  'signin.code': 'The 6-digit code', 'signin.submit': 'Sign in',
  'appointments.title': 'My appointments', 'appointments.upcoming': 'Upcoming', 'appointments.past': 'Past and cancelled',
  'appointments.none': 'No upcoming appointment.', 'appointments.find': 'Find a practitioner',
  'appointments.practitioner': 'Practitioner', 'appointments.cancel': 'Cancel', 'appointments.reschedule': 'Reschedule',
  'appointments.sureCancel': 'Cancel this appointment?', 'appointments.confirmCancel': 'Yes, cancel it',
  'appointments.keep': 'Keep it', 'appointments.cancelled': 'Your appointment is cancelled.',
  'appointment.booked': 'Booked', 'appointment.cancelled': 'Cancelled',
  'rules.cancel': 'You can cancel or move an appointment up to {hours} hours before it starts.',
  'sale.title': 'Flash sales', 'sale.none': 'No flash sale right now.', 'sale.deal': '{price} for a voucher worth {value}',
  'sale.starts': 'Starts {when}', 'sale.ends': 'Ends {when}', 'sale.startsIn': 'Starts in {time}',
  'sale.remaining': '{left} of {total} vouchers left', 'sale.limit': 'Limit: {n} per person.',
  'sale.buy': 'Buy now', 'sale.buying': 'Reserving your voucher…',
  'phase.SCHEDULED': 'Coming soon', 'phase.ACTIVE': 'On sale now', 'phase.SOLD_OUT': 'Sold out', 'phase.ENDED': 'Ended',
  'order.title': 'Your order', 'order.creating': 'Your voucher is reserved; the order is being created…',
  'order.status': 'Status', 'order.amount': 'Amount', 'order.pay': 'Pay now', 'order.deadline': 'Pay before {when}, or the voucher goes back on sale.',
  'order.paid': 'Paid. Your voucher is in your wallet.', 'order.cancelled': 'This order was cancelled; nothing was charged.',
  'orderStatus.PENDING_PAYMENT': 'Waiting for payment', 'orderStatus.PAID': 'Paid', 'orderStatus.CANCELLED': 'Cancelled',
  'orderStatus.REFUNDED': 'Refunded',
  'wallet.title': 'My wallet', 'wallet.none': 'No voucher yet.', 'wallet.value': 'Worth {value}', 'wallet.issued': 'Received {when}',
  'voucher.AVAILABLE': 'Ready to use', 'voucher.HELD': 'Held by an order', 'voucher.USED': 'Used', 'voucher.REVOKED': 'Revoked',
  'notifications.title': 'Notifications', 'notifications.none': 'No notification yet.', 'notifications.markRead': 'Mark as read',
  'error.network': 'Pulse cannot be reached. Check your connection and try again.',
  'error.slot-taken': 'Someone else just booked this time. Please choose another.',
  'error.slot-being-booked': 'Someone is booking this time right now. Please choose another.',
  'error.booking-too-soon': 'This time is too close: appointments must be booked at least {notice} ahead.',
  'error.booking-beyond-horizon': 'Appointments can be booked up to {days} days ahead.',
  'error.daily-limit-reached': {one: 'You can hold {count} appointment per day.', other: 'You can hold {count} appointments per day.'},
  'error.cancellation-too-late': 'It is too late to change this appointment: it can be cancelled or moved up to {hours} hours before it starts.',
  'error.appointment-not-active': 'This appointment is no longer active.',
  'error.appointment-started': 'This appointment has already started.',
  'error.seckill-sold-out': 'Sold out: every voucher has been taken.',
  'error.seckill-already-bought': 'You already bought this voucher: one per person.',
  'error.seckill-not-started': 'The sale has not started yet.',
  'error.seckill-ended': 'The sale has ended.',
  'error.seckill-rate-limited': 'Too many tries: wait a moment and try again.',
  'error.rate-limited': 'Too many requests: wait a moment and try again.',
  'error.invalid-code': 'This code is not right. Check the text message and try again.',
  'error.code-expired': 'This code has expired: ask for a new one.',
  'error.otp-rate-limited': 'A code was sent a moment ago: wait before asking for another.',
  'error.phone-wrong-country': 'Use a phone number of this country.',
  'error.validation-failed': 'Check what you entered: {detail}',
  'error.unauthorized': 'Please sign in again.',
  'error.payment-deadline-passed': 'The time to pay has passed; the order was cancelled.',
  'error.order-wrong-status': 'This order cannot be paid any more.',
  'error.other': 'Something went wrong: {detail}',
};

const fr = {
  'loading': 'Chargement…',
  'skip': 'Aller au contenu',
  'nav.find': 'Trouver un praticien', 'nav.appointments': 'Mes rendez-vous', 'nav.sale': 'Ventes flash',
  'nav.wallet': 'Portefeuille', 'nav.notifications': 'Notifications', 'nav.signIn': 'Se connecter', 'nav.signOut': 'Se déconnecter',
  'nav.language': 'Langue', 'nav.unread': {one: '{count} notification non lue', other: '{count} notifications non lues'},
  'search.title': 'Trouver un praticien', 'search.specialty': 'Spécialité', 'search.anySpecialty': 'Toutes les spécialités',
  'search.city': 'Ville', 'search.cityExample': 'Paris', 'search.submit': 'Rechercher', 'search.nearMe': 'Autour de moi',
  'search.results': 'Résultats', 'search.start': 'Choisissez une spécialité, une ville, ou cherchez autour de vous.',
  'search.found': {one: '{count} praticien', other: '{count} praticiens'},
  'search.none': 'Aucun praticien ne correspond. Essayez une autre ville ou spécialité.',
  'search.distance': 'à {km} km', 'search.price': 'Consultation : {price}', 'search.next': 'Prochain créneau libre : {when}',
  'search.noSlot': 'Pas de créneau libre prochainement.', 'search.seeSlots': 'Voir les créneaux', 'search.seeSlotsOf': 'Voir les créneaux libres de {name}',
  'search.pages': 'Pages de résultats', 'search.previousPage': 'Page précédente', 'search.nextPage': 'Page suivante',
  'search.noLocation': 'Votre position n’est pas disponible : cherchez par ville.', 'search.locating': 'Recherche de votre position…',
  'specialty.general-practice': 'Médecine générale', 'specialty.dentistry': 'Dentiste', 'specialty.dermatology': 'Dermatologie',
  'specialty.pediatrics': 'Pédiatrie', 'specialty.ophthalmology': 'Ophtalmologie', 'specialty.gynecology': 'Gynécologie',
  'specialty.cardiology': 'Cardiologie', 'specialty.physiotherapy': 'Kinésithérapie', 'specialty.psychiatry': 'Psychiatrie',
  'practitioner.title': 'Praticien', 'practitioner.noSlot': 'Aucun créneau', 'practitioner.slotLabel': 'Réserver {when}',
  'practitioner.speaks': 'Parle {languages}', 'practitioner.moving': 'Choisissez le nouvel horaire de votre rendez-vous.',
  'practitioner.week': 'Semaine du {day}', 'practitioner.previous': 'Semaine précédente', 'practitioner.next': 'Semaine suivante',
  'confirm.title': 'Confirmez votre rendez-vous', 'confirm.moveTitle': 'Confirmez le nouvel horaire',
  'confirm.signInFirst': 'Connectez-vous avec votre téléphone pour réserver.', 'confirm.booking': 'Réservation…',
  'confirm.done': 'Votre rendez-vous est réservé', 'confirm.doneText': '{when} avec {name}.',
  'confirm.book': 'Réserver ce rendez-vous', 'confirm.move': 'Déplacer mon rendez-vous ici',
  'confirm.text': '{when} avec {name} ({price}).', 'confirm.other': 'Choisir un autre horaire',
  'signin.title': 'Connexion', 'signin.phone': 'Téléphone mobile', 'signin.phoneHint': 'Nous vous envoyons un code à 6 chiffres par SMS.',
  'signin.send': 'Recevoir un code', 'signin.sent': 'Un code est en route.', 'signin.sandbox': 'Code du bac à sable : {code}',
  'signin.code': 'Le code à 6 chiffres', 'signin.submit': 'Se connecter',
  'appointments.title': 'Mes rendez-vous', 'appointments.upcoming': 'À venir', 'appointments.past': 'Passés et annulés',
  'appointments.none': 'Aucun rendez-vous à venir.', 'appointments.find': 'Trouver un praticien',
  'appointments.practitioner': 'Praticien', 'appointments.cancel': 'Annuler', 'appointments.reschedule': 'Déplacer',
  'appointments.sureCancel': 'Annuler ce rendez-vous ?', 'appointments.confirmCancel': 'Oui, l’annuler',
  'appointments.keep': 'Le garder', 'appointments.cancelled': 'Votre rendez-vous est annulé.',
  'appointment.booked': 'Réservé', 'appointment.cancelled': 'Annulé',
  'rules.cancel': 'Vous pouvez annuler ou déplacer un rendez-vous jusqu’à {hours} heures avant son début.',
  'sale.title': 'Ventes flash', 'sale.none': 'Aucune vente flash en ce moment.', 'sale.deal': '{price} pour un bon d’une valeur de {value}',
  'sale.starts': 'Début : {when}', 'sale.ends': 'Fin : {when}', 'sale.startsIn': 'Début dans {time}',
  'sale.remaining': 'Il reste {left} bons sur {total}', 'sale.limit': 'Limite : {n} par personne.',
  'sale.buy': 'Acheter', 'sale.buying': 'Réservation de votre bon…',
  'phase.SCHEDULED': 'Bientôt', 'phase.ACTIVE': 'En vente', 'phase.SOLD_OUT': 'Épuisé', 'phase.ENDED': 'Terminée',
  'order.title': 'Votre commande', 'order.creating': 'Votre bon est réservé ; la commande est en cours de création…',
  'order.status': 'Statut', 'order.amount': 'Montant', 'order.pay': 'Payer', 'order.deadline': 'Payez avant le {when}, sinon le bon est remis en vente.',
  'order.paid': 'Payé. Votre bon est dans votre portefeuille.', 'order.cancelled': 'Cette commande a été annulée ; rien n’a été débité.',
  'orderStatus.PENDING_PAYMENT': 'En attente de paiement', 'orderStatus.PAID': 'Payée', 'orderStatus.CANCELLED': 'Annulée',
  'orderStatus.REFUNDED': 'Remboursée',
  'wallet.title': 'Mon portefeuille', 'wallet.none': 'Aucun bon pour l’instant.', 'wallet.value': 'Valeur : {value}', 'wallet.issued': 'Reçu le {when}',
  'voucher.AVAILABLE': 'Utilisable', 'voucher.HELD': 'Réservé par une commande', 'voucher.USED': 'Utilisé', 'voucher.REVOKED': 'Révoqué',
  'notifications.title': 'Notifications', 'notifications.none': 'Aucune notification.', 'notifications.markRead': 'Marquer comme lue',
  'error.network': 'Pulse est injoignable. Vérifiez votre connexion et réessayez.',
  'error.slot-taken': 'Quelqu’un vient de réserver cet horaire. Choisissez-en un autre.',
  'error.slot-being-booked': 'Quelqu’un réserve cet horaire en ce moment. Choisissez-en un autre.',
  'error.booking-too-soon': 'Cet horaire est trop proche : un rendez-vous se réserve au moins {notice} à l’avance.',
  'error.booking-beyond-horizon': 'Les rendez-vous se réservent au plus {days} jours à l’avance.',
  'error.daily-limit-reached': {one: 'Vous pouvez avoir {count} rendez-vous par jour.', other: 'Vous pouvez avoir {count} rendez-vous par jour.'},
  'error.cancellation-too-late': 'Il est trop tard pour modifier ce rendez-vous : on peut l’annuler ou le déplacer jusqu’à {hours} heures avant son début.',
  'error.appointment-not-active': 'Ce rendez-vous n’est plus actif.',
  'error.appointment-started': 'Ce rendez-vous a déjà commencé.',
  'error.seckill-sold-out': 'Épuisé : tous les bons sont partis.',
  'error.seckill-already-bought': 'Vous avez déjà acheté ce bon : un par personne.',
  'error.seckill-not-started': 'La vente n’a pas encore commencé.',
  'error.seckill-ended': 'La vente est terminée.',
  'error.seckill-rate-limited': 'Trop d’essais : patientez un instant puis réessayez.',
  'error.rate-limited': 'Trop de demandes : patientez un instant puis réessayez.',
  'error.invalid-code': 'Ce code n’est pas le bon. Vérifiez le SMS et réessayez.',
  'error.code-expired': 'Ce code a expiré : demandez-en un nouveau.',
  'error.otp-rate-limited': 'Un code vient d’être envoyé : patientez avant d’en demander un autre.',
  'error.phone-wrong-country': 'Utilisez un numéro de téléphone de ce pays.',
  'error.validation-failed': 'Vérifiez votre saisie : {detail}',
  'error.unauthorized': 'Veuillez vous reconnecter.',
  'error.payment-deadline-passed': 'Le délai de paiement est dépassé ; la commande a été annulée.',
  'error.order-wrong-status': 'Cette commande ne peut plus être payée.',
  'error.other': 'Un problème est survenu : {detail}',
};

const de = {
  'loading': 'Wird geladen…',
  'skip': 'Zum Inhalt springen',
  'nav.find': 'Arzt finden', 'nav.appointments': 'Meine Termine', 'nav.sale': 'Blitzangebote',
  'nav.wallet': 'Gutscheine', 'nav.notifications': 'Benachrichtigungen', 'nav.signIn': 'Anmelden', 'nav.signOut': 'Abmelden',
  'nav.language': 'Sprache', 'nav.unread': {one: '{count} ungelesene Benachrichtigung', other: '{count} ungelesene Benachrichtigungen'},
  'search.title': 'Arzt finden', 'search.specialty': 'Fachrichtung', 'search.anySpecialty': 'Alle Fachrichtungen',
  'search.city': 'Stadt', 'search.cityExample': 'Berlin', 'search.submit': 'Suchen', 'search.nearMe': 'In meiner Nähe',
  'search.results': 'Ergebnisse', 'search.start': 'Wählen Sie eine Fachrichtung, eine Stadt, oder suchen Sie in Ihrer Nähe.',
  'search.found': {one: '{count} Ärztin oder Arzt', other: '{count} Ärztinnen und Ärzte'},
  'search.none': 'Niemand passt. Versuchen Sie eine andere Stadt oder Fachrichtung.',
  'search.distance': '{km} km entfernt', 'search.price': 'Sprechstunde: {price}', 'search.next': 'Nächster freier Termin: {when}',
  'search.noSlot': 'Bald kein freier Termin.', 'search.seeSlots': 'Freie Termine ansehen', 'search.seeSlotsOf': 'Freie Termine von {name} ansehen',
  'search.pages': 'Ergebnisseiten', 'search.previousPage': 'Vorige Seite', 'search.nextPage': 'Nächste Seite',
  'search.noLocation': 'Ihr Standort ist nicht verfügbar: suchen Sie nach Stadt.', 'search.locating': 'Standort wird ermittelt…',
  'specialty.general-practice': 'Allgemeinmedizin', 'specialty.dentistry': 'Zahnmedizin', 'specialty.dermatology': 'Dermatologie',
  'specialty.pediatrics': 'Kinderheilkunde', 'specialty.ophthalmology': 'Augenheilkunde', 'specialty.gynecology': 'Gynäkologie',
  'specialty.cardiology': 'Kardiologie', 'specialty.physiotherapy': 'Physiotherapie', 'specialty.psychiatry': 'Psychiatrie',
  'practitioner.title': 'Praxis', 'practitioner.noSlot': 'Kein freier Termin', 'practitioner.slotLabel': '{when} buchen',
  'practitioner.speaks': 'Spricht {languages}', 'practitioner.moving': 'Wählen Sie die neue Zeit Ihres Termins.',
  'practitioner.week': 'Woche ab {day}', 'practitioner.previous': 'Vorige Woche', 'practitioner.next': 'Nächste Woche',
  'confirm.title': 'Termin bestätigen', 'confirm.moveTitle': 'Neue Zeit bestätigen',
  'confirm.signInFirst': 'Melden Sie sich mit Ihrem Telefon an, um zu buchen.', 'confirm.booking': 'Wird gebucht…',
  'confirm.done': 'Ihr Termin ist gebucht', 'confirm.doneText': '{when} bei {name}.',
  'confirm.book': 'Diesen Termin buchen', 'confirm.move': 'Meinen Termin hierher verlegen',
  'confirm.text': '{when} bei {name} ({price}).', 'confirm.other': 'Andere Zeit wählen',
  'signin.title': 'Anmelden', 'signin.phone': 'Mobiltelefon', 'signin.phoneHint': 'Wir senden Ihnen einen 6-stelligen Code per SMS.',
  'signin.send': 'Code senden', 'signin.sent': 'Ein Code ist unterwegs.', 'signin.sandbox': 'Sandbox-Code: {code}',
  'signin.code': 'Der 6-stellige Code', 'signin.submit': 'Anmelden',
  'appointments.title': 'Meine Termine', 'appointments.upcoming': 'Anstehend', 'appointments.past': 'Vergangen und abgesagt',
  'appointments.none': 'Kein anstehender Termin.', 'appointments.find': 'Arzt finden',
  'appointments.practitioner': 'Praxis', 'appointments.cancel': 'Absagen', 'appointments.reschedule': 'Verlegen',
  'appointments.sureCancel': 'Diesen Termin absagen?', 'appointments.confirmCancel': 'Ja, absagen',
  'appointments.keep': 'Behalten', 'appointments.cancelled': 'Ihr Termin ist abgesagt.',
  'appointment.booked': 'Gebucht', 'appointment.cancelled': 'Abgesagt',
  'rules.cancel': 'Sie können einen Termin bis {hours} Stunden vor Beginn absagen oder verlegen.',
  'sale.title': 'Blitzangebote', 'sale.none': 'Gerade kein Blitzangebot.', 'sale.deal': '{price} für einen Gutschein im Wert von {value}',
  'sale.starts': 'Beginn: {when}', 'sale.ends': 'Ende: {when}', 'sale.startsIn': 'Beginnt in {time}',
  'sale.remaining': 'Noch {left} von {total} Gutscheinen', 'sale.limit': 'Höchstens {n} pro Person.',
  'sale.buy': 'Jetzt kaufen', 'sale.buying': 'Ihr Gutschein wird reserviert…',
  'phase.SCHEDULED': 'Demnächst', 'phase.ACTIVE': 'Jetzt im Verkauf', 'phase.SOLD_OUT': 'Ausverkauft', 'phase.ENDED': 'Beendet',
  'order.title': 'Ihre Bestellung', 'order.creating': 'Ihr Gutschein ist reserviert; die Bestellung wird angelegt…',
  'order.status': 'Status', 'order.amount': 'Betrag', 'order.pay': 'Jetzt bezahlen', 'order.deadline': 'Bezahlen Sie bis {when}, sonst geht der Gutschein zurück in den Verkauf.',
  'order.paid': 'Bezahlt. Ihr Gutschein liegt in Ihren Gutscheinen.', 'order.cancelled': 'Diese Bestellung wurde storniert; nichts wurde abgebucht.',
  'orderStatus.PENDING_PAYMENT': 'Wartet auf Zahlung', 'orderStatus.PAID': 'Bezahlt', 'orderStatus.CANCELLED': 'Storniert',
  'orderStatus.REFUNDED': 'Erstattet',
  'wallet.title': 'Meine Gutscheine', 'wallet.none': 'Noch kein Gutschein.', 'wallet.value': 'Wert: {value}', 'wallet.issued': 'Erhalten am {when}',
  'voucher.AVAILABLE': 'Einlösbar', 'voucher.HELD': 'Von einer Bestellung reserviert', 'voucher.USED': 'Eingelöst', 'voucher.REVOKED': 'Widerrufen',
  'notifications.title': 'Benachrichtigungen', 'notifications.none': 'Noch keine Benachrichtigung.', 'notifications.markRead': 'Als gelesen markieren',
  'error.network': 'Pulse ist nicht erreichbar. Prüfen Sie Ihre Verbindung und versuchen Sie es erneut.',
  'error.slot-taken': 'Diese Zeit wurde gerade gebucht. Bitte wählen Sie eine andere.',
  'error.slot-being-booked': 'Diese Zeit wird gerade gebucht. Bitte wählen Sie eine andere.',
  'error.booking-too-soon': 'Diese Zeit ist zu nah: Termine werden mindestens {notice} im Voraus gebucht.',
  'error.booking-beyond-horizon': 'Termine können höchstens {days} Tage im Voraus gebucht werden.',
  'error.daily-limit-reached': {one: 'Sie können {count} Termin pro Tag haben.', other: 'Sie können {count} Termine pro Tag haben.'},
  'error.cancellation-too-late': 'Für Änderungen ist es zu spät: Ein Termin kann bis {hours} Stunden vor Beginn abgesagt oder verlegt werden.',
  'error.appointment-not-active': 'Dieser Termin ist nicht mehr aktiv.',
  'error.appointment-started': 'Dieser Termin hat schon begonnen.',
  'error.seckill-sold-out': 'Ausverkauft: Alle Gutscheine sind vergeben.',
  'error.seckill-already-bought': 'Sie haben diesen Gutschein schon gekauft: einer pro Person.',
  'error.seckill-not-started': 'Der Verkauf hat noch nicht begonnen.',
  'error.seckill-ended': 'Der Verkauf ist beendet.',
  'error.seckill-rate-limited': 'Zu viele Versuche: Warten Sie kurz und versuchen Sie es erneut.',
  'error.rate-limited': 'Zu viele Anfragen: Warten Sie kurz und versuchen Sie es erneut.',
  'error.invalid-code': 'Dieser Code stimmt nicht. Prüfen Sie die SMS und versuchen Sie es erneut.',
  'error.code-expired': 'Dieser Code ist abgelaufen: Fordern Sie einen neuen an.',
  'error.otp-rate-limited': 'Gerade wurde ein Code gesendet: Warten Sie, bevor Sie einen neuen anfordern.',
  'error.phone-wrong-country': 'Verwenden Sie eine Telefonnummer dieses Landes.',
  'error.validation-failed': 'Prüfen Sie Ihre Eingabe: {detail}',
  'error.unauthorized': 'Bitte melden Sie sich erneut an.',
  'error.payment-deadline-passed': 'Die Zahlungsfrist ist abgelaufen; die Bestellung wurde storniert.',
  'error.order-wrong-status': 'Diese Bestellung kann nicht mehr bezahlt werden.',
  'error.other': 'Etwas ist schiefgegangen: {detail}',
};

const TEXTS = {en, fr, de};
const ALIASES = {'sold-out': 'seckill-sold-out', 'already-bought': 'seckill-already-bought', 'not-started': 'seckill-not-started'};

let current = settings.languages[0];

/** The language in use. */
export const language = () => current;

/** Switches to `lang` (one of the country's app languages); false when it has no texts. */
export function setLanguage(lang) {
  const primary = String(lang || '').split(/[-_]/)[0].toLowerCase();
  if (!TEXTS[primary]) return false;
  current = primary;
  useLanguage(primary);
  document.documentElement.lang = primary;
  return true;
}

/** The text `key` with `{name}` filled from `params`; `fallback` (or the key) when missing. */
export function t(key, params = {}, fallback) {
  let text = TEXTS[current][key] ?? en[key];
  if (text === undefined) return fallback ?? key;
  if (typeof text === 'object') {
    text = text[new Intl.PluralRules(current).select(Number(params.count))] ?? text.other;
  }
  return text.replace(/\{(\w+)\}/g, (_, name) => String(params[name] ?? ''));
}

function duration(minutes) {
  const unit = minutes % 60 === 0 ? 'hour' : 'minute';
  return new Intl.NumberFormat(current, {style: 'unit', unit, unitDisplay: 'long'})
    .format(unit === 'hour' ? minutes / 60 : minutes);
}

/** Words for a failed call: the refusal explained with the country's rules. */
export function problemText(error) {
  if (!(error instanceof ApiError)) return t('error.other', {detail: String(error && error.message)});
  if (error.status === 0) return t('error.network');
  const slug = ALIASES[error.slug] || error.slug;
  const params = {
    detail: error.problem.detail || error.problem.title || '',
    notice: duration(settings.minNoticeMinutes),
    days: settings.horizonDays,
    count: settings.maxAppointmentsPerPatientPerDay,
    hours: Math.round(settings.cancellationCutoffMinutes / 60),
  };
  if (TEXTS[current][`error.${slug}`] || en[`error.${slug}`]) return t(`error.${slug}`, params);
  if (error.status === 401) return t('error.unauthorized');
  return t('error.other', params);
}
